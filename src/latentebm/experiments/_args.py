"""Command-line flags shared by every experiment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._docs import DOCS
from .._validation import check_int, check_scalar, check_seed
from ..data.mnist import DATA_ENV

#: What adds a command's flags to its parser.
AddFlags = Callable[[argparse.ArgumentParser], None]

#: ``--data-dir`` for a command that reads MNIST.
MNIST_DATA_DIR = ("folder with the MNIST IDX .gz files (default: $LATENTEBM_DATA, then the "
                  "cache, then a checksum-verified download)")
#: ``--data-dir`` for a command whose photographs come from its own ``--images`` folder.
UNUSED_DATA_DIR = ("not read by this command: its photographs come from the --images folder "
                   "(see there for its default)")


def command_arguments(name: str, add_flags: AddFlags) -> AddFlags:
    """A command module's ``add_arguments``: ``add_flags`` with the docstring every command's
    ``add_arguments`` has.

    Parameters
    ----------
    name : str
        The command (the module's ``NAME``), as ``latentebm <name>`` in the docstring.
    add_flags : callable
        ``add_flags(parser)`` adds the command's flags to ``parser``.

    Returns
    -------
    callable
        ``add_arguments(parser)``, which calls ``add_flags(parser)``.
    """
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_flags(parser)

    add_arguments.__module__ = add_flags.__module__
    add_arguments.__qualname__ = "add_arguments"
    add_arguments.__doc__ = (f"Add the flags of ``latentebm {name}`` to ``parser``.\n\n"
                             f"Parameters\n----------\n{DOCS['cmd_parser']}\n")
    return add_arguments


def _flag_type(name: str, parse: Callable[[str], Any], check: Callable[[Any], Any],
               kind: str, doc: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``parse`` and validates with ``check`` (the
    library's own validators), so a bad value is refused before any data is read."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None

    convert.__name__ = convert.__qualname__ = name
    convert.__doc__ = doc
    return convert


count_argument = _flag_type(
    "count_argument", int, lambda v: check_int(v, "value", low=1), "an integer",
    "argparse ``type`` for a count (epochs, atoms, batch size, ...): an integer >= 1.")
non_negative_argument = _flag_type(
    "non_negative_argument", float, lambda v: check_scalar(v, "value", low=0.0), "a number",
    "argparse ``type`` for a penalty weight such as ``--lam``: a finite number >= 0.")
seed_argument = _flag_type(
    "seed_argument", int, lambda v: check_seed(v, "value"), "an integer",
    "argparse ``type`` for ``--seed``: an integer in [0, 2**32 - 1].")
non_negative_int_argument = _flag_type(
    "non_negative_int_argument", int, lambda v: check_int(v, "value", low=0), "an integer",
    "argparse ``type`` for a size where 0 means none or off (``--validation``, ``--taper``): "
    "an integer >= 0.")
fraction_argument = _flag_type(
    "fraction_argument", float, lambda v: check_scalar(v, "value", low=0.0, high=1.0),
    "a number", "argparse ``type`` for a share such as ``--support``: a number in [0, 1].")
def _data_device(text: str) -> str:
    if text.strip().lower().startswith("meta"):
        raise ValueError("meta holds no values to train on or report; choose cpu or cuda")
    return text


device_argument = _flag_type(
    "device_argument", str, _data_device, "a device",
    "argparse ``type`` for ``--device``: a torch device that holds values (not ``meta``; "
    "whether it exists here is checked when the command starts).")
positive_argument = _flag_type(
    "positive_argument", float,
    lambda v: check_scalar(v, "value", low=0.0, low_inclusive=False), "a number",
    "argparse ``type`` for a step size such as ``--lr``: a finite number > 0.")


def add_defaulted_flags(parser: argparse.ArgumentParser, kind: Callable[[str], Any],
                        flags: Sequence[tuple[str, Any, str]]) -> None:
    """Add flags of one type whose help ends in ``(default: <default>)``, in the given order.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser.
    kind : callable
        The flags' argparse ``type`` (``int``, ``float``, :func:`count_argument`, ...).
    flags : sequence of (str, object, str)
        ``(flag, default, what)``: the help reads ``f"{what} (default: {default})"``.
    """
    for flag, default, what in flags:
        parser.add_argument(flag, type=kind, default=default, help=f"{what} (default: {default})")


def add_choice_flag(parser: argparse.ArgumentParser, flag: str, choices: Sequence[str],
                    what: str) -> None:
    """Add a flag that takes one of ``choices``, the first by default, with a help that ends in
    ``(default: <first choice>)``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser.
    flag : str
        The flag, e.g. ``"--encoder"``.
    choices : sequence of str
        The values the flag takes; the first is its default.
    what : str
        The help before ``(default: ...)``.
    """
    parser.add_argument(flag, choices=choices, default=choices[0],
                        help=f"{what} (default: {choices[0]})")


def add_common_arguments(parser: argparse.ArgumentParser, *, epochs: int | None,
                         lam: float | None, data_dir_help: str = MNIST_DATA_DIR,
                         trains: bool = True) -> None:
    """Add ``--out --device --seed --epochs [--lam] --resume --data-dir --quiet`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser.
    epochs : int or None
        Default of ``--epochs``; ``None`` for a command that does not train (no flag).
    lam : float or None
        Default of ``--lam``; ``None`` leaves the flag to the command.
    data_dir_help : str
        What ``--data-dir`` means for this command (:data:`MNIST_DATA_DIR` by default).
    trains : bool
        ``False`` for a command that trains nothing on a device and keeps no checkpoint: no
        ``--device`` and no ``--resume``.
    """
    parser.add_argument("--out", required=True,
                        help="output folder (created if missing; one run at a time)")
    if trains:
        parser.add_argument("--device", type=device_argument, default="cpu",
                            help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--seed", type=seed_argument, default=0,
                        help="random seed in [0, 2**32 - 1] (default: 0)")
    if epochs is not None:
        parser.add_argument("--epochs", type=count_argument, default=epochs,
                            help=f"epochs (default: {epochs})")
    if lam is not None:
        parser.add_argument("--lam", type=non_negative_argument, default=lam,
                            help=f"λ of ½‖y − Wz‖² + λ‖z‖₁ (default: {lam})")
    if trains:
        parser.add_argument("--resume", action="store_true",
                            help="continue from the checkpoint in --out")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_ENV),
                        help=data_dir_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def default_photographs() -> Path | None:
    """Kodak24's folder when ``../shared/data/kodak24`` exists beside the working folder or
    the source checkout, else ``None`` (scikit-image's bundled photographs).

    Returns
    -------
    pathlib.Path or None
    """
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        folder = root.parent / "shared" / "data" / "kodak24"
        if folder.is_dir() and any(folder.glob("*.png")):
            return folder
    return None
