"""``latentebm``: the command-line entry point. Each subcommand is an experiment module."""

from __future__ import annotations

import argparse
import sys

from .experiments import command_modules
from .training import distributed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentebm",
        description="Regularized latent-variable energy-based models: sparse coding, "
        "ISTA/FISTA, LISTA, convolutional sparse coding and VAEs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # under torchrun: join the process group (gloo on CPU, NCCL on CUDA) for the command
        with distributed.process_group():
            run = args._run(args)
            report = distributed.is_main()
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint in --out is usable with --resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"latentebm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if report:
        print(run.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
