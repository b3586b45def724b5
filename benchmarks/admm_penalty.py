"""The default initial penalty of the Fourier-domain ADMM: ``50λ + 1`` against ``10λ + 1``.

B3's problem family on three Kodak images that B3's filters were not learned on and two that
they were not tested on either (kodim05, kodim15, and B3's own kodim23): the central 256x256
grey crop, Tikhonov high-passed, coded with B3's 32 learned 8x8 filters, circular boundaries, at
λ = 0.02, 0.05 and 0.1. For each image, λ and initial penalty (both with the default residual
balancing) it reports

- the **oracle** stop: the fewest iterations (on a grid of 5) whose energy is within 1e-4 of
  ``E*``, and the time of a run of that many iterations;
- the **self-stopped** run: ``solve(..., method="admm", tol=1e-4)``, which stops on its own
  duality gap (checked every 10 iterations), its iterations and time.

``E*`` is the lowest energy seen, including a reference run to a duality gap of 1e-9·E (which
bounds its error). Two threads, float64; times are single runs (the iteration counts, which
decide the comparison, are deterministic).

    .venv/bin/python benchmarks/admm_penalty.py     # about 20 minutes on 2 threads

Writes ``benchmarks/results/admm_penalty.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from b3_conv_sparse_coding import fixed_filters, load_image, tikhonov_highpass

HERE = Path(__file__).resolve().parent
TARGET = 1e-4
GRID = 5


class _Reached(Exception):
    pass


def main() -> None:
    import latentebm as le

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=["kodim05.png", "kodim15.png",
                                                         "kodim23.png"])
    parser.add_argument("--lams", nargs="+", type=float, default=[0.02, 0.05, 0.1])
    parser.add_argument("--rules", nargs="+", type=float, default=[50.0, 10.0],
                        help="c in the initial penalty ρ = cλ + 1")
    parser.add_argument("--out", default=str(HERE / "results" / "admm_penalty.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    op = le.ConvDictionary(torch.from_numpy(fixed_filters(2))[:, None], boundary="circular")

    rows = []
    for name in args.images:
        Y = torch.from_numpy(tikhonov_highpass(load_image(name)))[None, None]

        for lam in args.lams:
            def energy(z: torch.Tensor, lam: float = lam, Y: torch.Tensor = Y) -> float:
                r = Y - op.decode(z)
                return float(0.5 * (r * r).sum() + lam * z.abs().sum())

            reference = le.solve(Y, op, lam, method="admm", tol=1e-9, max_iter=6000)
            e_star = energy(reference.z)
            per_rule = {}
            for c in args.rules:
                rho = c * lam + 1
                t0 = time.perf_counter()
                certified = le.solve(Y, op, lam, method="admm", tol=TARGET, max_iter=6000,
                                     rho=rho)
                self_time = time.perf_counter() - t0
                e_star = min(e_star, energy(certified.z))
                per_rule[c] = (rho, certified.n_iter, self_time)
            for c, (rho, self_iter, self_time) in per_rule.items():
                oracle = _oracle_iterations(le, Y, op, lam, rho, energy, e_star)
                t0 = time.perf_counter()
                le.solve(Y, op, lam, method="admm", tol=0.0, max_iter=oracle, rho=rho,
                         check_every=oracle)
                oracle_time = time.perf_counter() - t0
                rows.append((name, lam, c, oracle, oracle_time, self_iter, self_time))
                print(f"{name} λ={lam} ρ={c:g}λ+1: oracle {oracle} it {oracle_time:.2f} s, "
                      f"self-stopped {self_iter} it {self_time:.2f} s", flush=True)
    write_report(args, rows, started, load_before, os.getloadavg())


def _oracle_iterations(le, Y, op, lam, rho, energy, e_star) -> int:
    """The first multiple of :data:`GRID` iterations whose energy is within ``TARGET``."""
    found = []

    def watch(k, state) -> None:
        if k % GRID == 0 and energy(state.z) <= e_star * (1 + TARGET):
            found.append(k)
            raise _Reached

    try:
        le.solve(Y, op, lam, method="admm", tol=0.0, max_iter=6000, rho=rho, check_every=GRID,
                 callback=watch)
    except _Reached:
        return found[0]
    raise RuntimeError("the oracle target was not reached in 6000 iterations")


def write_report(args, rows, started, load_before, load_after) -> None:
    lines = [
        "# ADMM's default initial penalty: 50λ + 1 (SPORCO's) against 10λ + 1",
        "",
        "How to reproduce: `.venv/bin/python benchmarks/admm_penalty.py` (needs "
        "`results/raw/b3_filters.npy`, written by `b3_conv_sparse_coding.py`).",
        "",
        f"- Run {started} on the 2-vCPU machine, 2 threads, float64; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after. Times are single runs; the "
        "iteration counts are deterministic.",
        "- Problem: B3's (32 learned 8x8 filters, circular boundaries) on the central 256x256 "
        "grey crop of each image, Tikhonov high-passed. Both rules use the default residual "
        "balancing of ρ.",
        f"- Oracle: the fewest iterations (grid of {GRID}) whose energy is within "
        f"{TARGET:g} of E*; self-stopped: `tol={TARGET:g}` (duality gap checked every 10 "
        "iterations).",
        "",
        "| image | λ | initial ρ | oracle iterations | oracle time (s) | self-stopped iterations "
        "| self-stopped time (s) | self / oracle |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, lam, c, oracle, oracle_time, self_iter, self_time in rows:
        lines.append(f"| {name} | {lam:g} | {c:g}λ + 1 | {oracle} | {oracle_time:.2f} | "
                     f"{self_iter} | {self_time:.2f} | {self_time / oracle_time:.2f}× |")
    lines.append("")
    by_key = {(r[0], r[1], r[2]): r for r in rows}
    if len(args.rules) >= 2:
        old, new = args.rules[0], args.rules[1]
        pairs = [(by_key[(n, lam, old)], by_key[(n, lam, new)])
                 for n in args.images for lam in args.lams]
        oracle_ratio = [a[3] / b[3] for a, b in pairs]
        self_ratio = [a[5] / b[5] for a, b in pairs]
        lines.append(
            f"{old:g}λ + 1 over {new:g}λ + 1, iterations: oracle {min(oracle_ratio):.2f}–"
            f"{max(oracle_ratio):.2f}×, self-stopped {min(self_ratio):.2f}–"
            f"{max(self_ratio):.2f}× (over {len(pairs)} image and λ pairs).")
        lines.append("")
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
