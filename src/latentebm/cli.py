"""``latentebm``: the command-line entry point. Each subcommand is an experiment module."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .allocator import keep_large_allocations
from .data.mnist import DATA_ENV
from .experiments import command_modules
from .experiments._lock import release_all
from .experiments._run import keep_configs, remove_first_configs, restore_configs
from .training import distributed

INTERRUPTED = "interrupted: the last checkpoint in --out is usable with --resume"
"""What Ctrl-C prints, unless the command's module says otherwise (its ``INTERRUPTED``)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``latentebm`` parser with one subcommand per experiment module.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand's defaults hold its module's ``run`` as ``_run``.
    """
    parser = argparse.ArgumentParser(
        prog="latentebm",
        description="Regularized latent-variable energy-based models: sparse coding, "
        "ISTA/FISTA, LISTA, convolutional sparse coding and VAEs.",
    )
    parser.add_argument("--version", action="version", version=f"latentebm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run,
                       _interrupted=getattr(module, "INTERRUPTED", INTERRUPTED))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status. Under ``torchrun`` the command runs in the
    job's process group and rank 0 alone prints what it wrote. Large freed CPU buffers are kept
    for reuse (:func:`~latentebm.keep_large_allocations`).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``latentebm`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 done (or ``--help``/``--version`` printed), 1 another process of a ``torchrun`` job
        failed or the output was closed before the command ended, 2 bad input or files (a
        flag the parser refuses included) or a run that diverged, 130 Ctrl-C.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the help, the version or the refusal
        return exc.code if isinstance(exc.code, int) else 2
    ignored = _ignored_data_dir(args)
    if ignored is not None:
        print(f"latentebm {args.command}: error: {ignored}", file=sys.stderr)
        return 2
    keep_large_allocations()  # our own process: large tensors reuse freed pages (allocator.py)
    finished = False
    try:
        # under torchrun: join the process group (gloo on CPU, NCCL on CUDA) for the command
        with distributed.process_group():
            run = args._run(args)
            report = distributed.is_main()
        finished = True
    except KeyboardInterrupt:
        print(args._interrupted, file=sys.stderr)
        return 130
    except BrokenPipeError:  # `latentebm ... | head`: the reader left before the command ended
        _silence_stdout()
        print(f"latentebm {args.command}: stopped: its output was closed (what it wrote to "
              "--out so far stays; --resume continues)", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, FloatingPointError) as exc:
        if isinstance(exc, (ValueError, TypeError)):  # a refusal: the run did not go on
            restore_configs()
        print(f"latentebm {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except distributed.DistributedError as exc:  # a RuntimeError: before the next clause
        print(f"latentebm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"latentebm {args.command}: error: not enough memory for these sizes "
              f"({_one_line(exc) or type(exc).__name__}); choose smaller ones", file=sys.stderr)
        return 2
    finally:
        if not finished:  # a folder with only this run's config.json would refuse the fix
            remove_first_configs()
        keep_configs()
        release_all()
    if report:
        try:
            print(run.summary())
        except BrokenPipeError:  # `latentebm ... | head`: the reader has gone, the run is saved
            _silence_stdout()
    return 0


def _ignored_data_dir(args: argparse.Namespace) -> str | None:
    """Why ``--sample`` with an explicit ``--data-dir`` is refused (the bundled sample would be
    used and the folder ignored), or None. ``--data-dir``'s default is ``$LATENTEBM_DATA``,
    which ``--sample`` may override."""
    data_dir = getattr(args, "data_dir", None)
    if not getattr(args, "sample", False) or data_dir in (None, os.environ.get(DATA_ENV)):
        return None
    return (f"--sample trains on the MNIST sample bundled with the package; --data-dir "
            f"{data_dir} would be ignored: give one of them")


def _silence_stdout() -> None:
    """Send what is left in stdout's buffer nowhere, not into a traceback at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed (NumPy's ``MemoryError``, torch's
    ``RuntimeError`` from its CPU allocator or CUDA)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or (
        "out of memory" in text.lower())


def _one_line(exc: BaseException) -> str:
    """An exception as the user needs it: ``OSError`` with its file name, no traceback."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
