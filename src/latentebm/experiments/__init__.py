"""One module per lecture result. Each exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> Run``; the CLI registers every module listed in :data:`COMMANDS`. A module writes
its flags in a private ``_add_flags(parser)`` and makes ``add_arguments`` from it with
:func:`~latentebm.experiments._args.command_arguments`, which gives it the common docstring."""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS: tuple[str, ...] = (
    "sparse_coding_cmd", "vae_cmd", "fuzzy_balls_cmd", "lista_cmd", "psd_cmd",
    "conv_filters_cmd", "conv_colour_cmd", "pretrain_cmd", "conditional_cmd", "reproduce_cmd",
    "prepare_patches_cmd",
)


def command_modules() -> list[ModuleType]:
    """Import every command module.

    Returns
    -------
    list of module
        The modules named in :data:`COMMANDS`, in that order.
    """
    return [importlib.import_module(f"{__name__}.{name}") for name in COMMANDS]
