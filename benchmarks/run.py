"""Run the latentebm benchmarks and write markdown tables + raw JSON.

    .venv/bin/python benchmarks/run.py                    # B1 (all settings) and B2
    .venv/bin/python benchmarks/run.py --only B1b         # one B1 setting
    .venv/bin/python benchmarks/run.py --quick            # smoke run, results/quick/

See benchmarks/README.md. Threads are pinned before NumPy/SciPy/PyTorch are imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
B1_SETTINGS = ("B1a-10", "B1a-40", "B1b")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--only",
        nargs="+",
        default=["B1", "B2"],
        choices=["B1", "B2", "B1a", *B1_SETTINGS],
        help="benchmarks to run: B1 (= B1a-10 B1a-40 B1b), B1a (= B1a-10 B1a-40), B1b, B2",
    )
    ap.add_argument(
        "--n-signals",
        type=int,
        default=None,
        help="B1: number of MNIST test digits (default 10000; 300 with --quick)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="small smoke run (< 2 min); writes to OUT/quick/"
    )
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder")
    ap.add_argument("--threads", type=int, default=2, help="threads for every library")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="B1: timings per qualifying run, best kept (default 3; 1 with --quick)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=45.0,
        help="B1: stop a contender's effort sweep after a run longer than this (s)",
    )
    ap.add_argument(
        "--b2-epochs", type=int, default=3, help="B2: at most this many passes over the data"
    )
    ap.add_argument(
        "--b2-seconds",
        type=float,
        default=90.0,
        help="B2: wall-clock training budget per contender (s); snapshots at fixed fractions",
    )

    ap.add_argument("--no-spams", action="store_true", help="skip the SPAMS contenders")
    ap.add_argument(
        "--contenders",
        nargs="+",
        default=None,
        help="B1: run only contenders whose key contains one of these (e.g. latentebm-cd sklearn)",
    )
    ap.add_argument(
        "--skip-throughput",
        action="store_true",
        help="B1: skip the FISTA-iteration-vs-matmul measurement",
    )
    args = ap.parse_args(argv)
    chosen = []
    for o in args.only:
        chosen += {"B1": list(B1_SETTINGS), "B1a": ["B1a-10", "B1a-40"]}.get(o, [o])
    args.b1_settings = [s for s in B1_SETTINGS if s in chosen]
    args.run_b2 = "B2" in chosen
    if args.quick:
        args.out = str(Path(args.out) / "quick")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _common import pin_threads

    pin_threads(args.threads)  # before NumPy / SciPy / torch are loaded

    import warnings

    from _common import environment, limit_runtime_threads, log

    warnings.filterwarnings("ignore", category=FutureWarning)
    thread_info = limit_runtime_threads(args.threads)
    env = environment(args.threads, thread_info)
    out = Path(args.out)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    log(f"output: {out}; threads {args.threads}; versions {env['versions']}")

    worker = None
    if not args.no_spams:
        from _spams import start_worker

        worker = start_worker(out / "raw", args.threads)
    try:
        if args.b1_settings:
            import b1_lasso

            res = b1_lasso.run(args, env, worker)
            b1_lasso.merge_and_write(out, res)
            log(f"wrote {out / 'B1.md'}")
        if args.run_b2:
            import b2_dictlearn

            res = b2_dictlearn.run(args, env, worker)
            b2_dictlearn.write(out, res)
            log(f"wrote {out / 'B2.md'}")
    finally:
        if worker is not None:
            worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
