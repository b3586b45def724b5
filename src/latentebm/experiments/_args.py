"""Command-line flags shared by every experiment."""

from __future__ import annotations

import argparse
import os


def add_common_arguments(parser: argparse.ArgumentParser, *, epochs: int, lam: float | None
                         ) -> None:
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs (default: {epochs})")
    if lam is not None:
        parser.add_argument("--lam", type=float, default=lam,
                            help=f"λ of ½‖y − Wz‖² + λ‖z‖₁ (default: {lam})")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --out")
    parser.add_argument("--data-dir", default=os.environ.get("LATENTEBM_DATA"),
                        help="folder with the MNIST IDX .gz files (default: $LATENTEBM_DATA, "
                             "then the cache, then a checksum-verified download)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
