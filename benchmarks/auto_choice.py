"""Which dense method should ``solve(method="auto")`` pick? ``gram_cd`` against ``fista`` on the
CPU, by batch size and by how many atoms are active (λ as a fraction of ``λ_max``).

Dictionaries: the learned MNIST dictionary of B1 (``results/raw/mnist_dict256_*.npy``, written
by ``b1_lasso.py``) and a random Gaussian one (784×256, unit columns, seed 0); signals: MNIST
test digits / 255 (``$LATENTEBM_DATA`` or ``/work/shared/data``). Each cell: best of 3 wall
clock times of ``latentebm.solve`` to a relative duality gap of 1e-4 (every sample certified),
float64, 2 threads, after one warm-up call. ``python benchmarks/auto_choice.py`` writes
``results/auto_choice.md``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("LATENTEBM_DATA", "/work/shared/data"))
BATCHES = (1, 16, 256, 4096)
FRACTIONS = (0.02, 0.05, 0.1, 0.3)
TOL = 1e-4


def best_time(run, repeats: int = 3) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import latentebm as le
    from latentebm.data import load_mnist

    torch.set_num_threads(2)
    load_before = os.getloadavg()
    digits = load_mnist("test", data_dir=DATA / "mnist", download=False)[0]
    Y = digits.reshape(len(digits), -1).astype(np.float64) / 255
    learned = np.load(next((HERE / "results" / "raw").glob("mnist_dict256_*.npy")))
    random = np.random.default_rng(0).standard_normal((784, 256))
    random /= np.linalg.norm(random, axis=0)
    rows = []
    for name, W in (("learned MNIST", learned.astype(np.float64)), ("random", random)):
        if W.shape[0] != 784:
            W = W.T
        lam_max = float(np.abs(Y @ W).max())
        for fraction in FRACTIONS:
            lam = fraction * lam_max
            for batch in BATCHES:
                Yb = Y[:batch]
                times = {m: best_time(lambda m=m, Yb=Yb, W=W, lam=lam: le.solve(
                    Yb, W, lam, method=m, tol=TOL, max_iter=20000)) for m in ("gram_cd", "fista")}
                nnz = float((le.solve(Yb, W, lam, method="gram_cd", tol=1e-10).z != 0)
                            .sum(1).mean())
                rows.append((name, fraction, nnz, batch, times["gram_cd"], times["fista"]))
                print(rows[-1], flush=True)
    lines = [
        "# `solve(method=\"auto\")` on dense problems: `gram_cd` against `fista`",
        "",
        "How to reproduce: `.venv/bin/python benchmarks/auto_choice.py` (float64, 2 threads, "
        f"tol = {TOL:g}, best of 3 after a warm-up). Load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after; run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| dictionary | λ / λ_max | mean non-zeros | batch | gram_cd | fista | fista / gram_cd |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, fraction, nnz, batch, t_cd, t_fista in rows:
        lines.append(f"| {name} | {fraction:g} | {nnz:.0f} | {batch} | {t_cd * 1e3:.1f} ms | "
                     f"{t_fista * 1e3:.1f} ms | {t_fista / t_cd:.2f}× |")
    (HERE / "results" / "auto_choice.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
