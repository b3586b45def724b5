"""Iteration times with and without ``latentebm.keep_large_allocations()`` (glibc's mmap and
trim thresholds raised to 1 GiB), each setting in its own process (it is process-wide).

Problems: the B4 batch (10 Tikhonov-high-passed 128x128 Kodak crops, 32 random unit 8x8
filters, circular boundaries, λ = 0.1, float64: codes of 42 MB), coded by ADMM and by FISTA from
a warm start; and B1's size of dense problem (10 000 MNIST-sized random signals, 256 atoms,
float64) by FISTA, whose tensors stay under glibc's own threshold. Per-iteration time is the
difference of a 30- and a 10-iteration solve divided by 20, best of 3.

    .venv/bin/python benchmarks/allocator.py [--threads 2]

Writes ``benchmarks/results/allocator.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _best_ms(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def _per_iteration(solve) -> float:
    return (_best_ms(lambda: solve(30)) - _best_ms(lambda: solve(10))) / 20


def worker(keep: bool, threads: int) -> dict:
    """The measurements of one process (``keep``: with the setting)."""
    import torch
    from b4_conv_dictionary_learning import images, initial_dictionary

    import latentebm as le

    kept = le.keep_large_allocations() if keep else False
    torch.set_num_threads(threads)
    S = torch.from_numpy(images())[:, None]
    op = le.ConvDictionary(torch.from_numpy(initial_dictionary())[:, None], boundary="circular")
    z0 = le.solve(S, op, 0.1, method="admm", tol=0.0, max_iter=10).z
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(784, 256, generator=gen, dtype=torch.float64)
    W /= W.norm(dim=0)
    Y = torch.rand(10_000, 784, generator=gen, dtype=torch.float64)
    return {
        "kept": kept,
        "conv ADMM": _per_iteration(lambda n: le.solve(S, op, 0.1, method="admm", tol=0.0,
                                                       max_iter=n, z0=z0, check_every=n)),
        "conv FISTA": _per_iteration(lambda n: le.fista(S, op, 0.1, tol=0.0, max_iter=n,
                                                        z0=z0)),
        "dense FISTA": _per_iteration(lambda n: le.fista(Y, W, 0.2, tol=0.0, max_iter=n,
                                                         polish=False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "allocator.md"))
    parser.add_argument("--worker", choices=("kept", "default"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "kept", args.threads)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(var, None)
    load_before = os.getloadavg()[0]
    results = {}
    for setting in ("default", "kept"):
        out = subprocess.run([sys.executable, __file__, "--worker", setting, "--threads",
                              str(args.threads)], check=True, env=env, cwd=HERE,
                             capture_output=True, text=True).stdout
        results[setting] = json.loads(out.strip().splitlines()[-1])
    load_after = os.getloadavg()[0]
    rows = [f"| {name} | {results['default'][name]:.1f} | {results['kept'][name]:.1f} | "
            f"{results['default'][name] / results['kept'][name]:.2f}× |"
            for name in ("conv ADMM", "conv FISTA", "dense FISTA")]
    text = "\n".join([
        "# Iteration time with and without keep_large_allocations",
        "",
        f"How to reproduce: `.venv/bin/python benchmarks/allocator.py --threads {args.threads}`"
        f" (the problems are in the script's docstring). {args.threads} threads, float64; "
        f"load average {load_before:.1f} before, {load_after:.1f} after; setting took effect: "
        f"{results['kept']['kept']}.",
        "",
        "| problem | ms / iteration, glibc defaults | ms / iteration, thresholds 1 GiB | "
        "speed-up |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
