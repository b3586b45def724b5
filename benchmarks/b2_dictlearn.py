"""B2: online dictionary learning on whitened natural-image patches, held-out energy vs time.

Data: 12×12 grey patches from Kodak24, whitened with Olshausen & Field's 1/f zero-phase filter
(``latentebm.data.natural_patches``); the first ``n_train`` patches train, the next ``n_test``
are held out. 256 atoms, the same initial atoms for every contender (random training patches,
unit-normalised), the same λ, minibatch size and sample stream (one pass = one epoch).

Each contender trains with its clock paused while a snapshot of its dictionary is copied out at
fixed step counts. After training, every snapshot is scored *outside* the timed region by the
held-out energy: mean over the held-out patches of ½‖y − Wz‖² + λ‖z‖₁ with z from a tight float64
FISTA solve (relative duality gap ≤ 1e-5, warm-started from the previous snapshot's codes).
Reported: the energy curve against training wall-clock time, and each contender's time to come
within 1 % of the best final held-out energy of any contender.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from _common import (
    PausableClock,
    clock,
    environment_lines,
    fmt_ratio,
    fmt_time,
    lasso_energy64,
    log,
    markdown_table,
    write_atomic,
    write_json,
)
from _data import patches

import latentebm

N_ATOMS = 256
SIZE = 12
LAM = 1.0  # patches have unit overall variance (‖y‖ ≈ 12 on average); ≈ 12 non-zeros at init
BATCH = 256
EVAL_TOL = 1e-4
WITHIN = 0.01


def snapshot_steps(total: int) -> list[int]:
    """Step counts at which dictionaries are copied out: geometric early, then every ~10 %."""
    geo = np.unique(np.round(np.geomspace(1, total, 6)).astype(int))
    lin = np.unique(np.round(np.linspace(0, total, 6)[1:]).astype(int))
    return sorted({int(s) for s in np.concatenate([geo, lin]) if 1 <= s <= total})


# ----------------------------------------------------------------------------- contenders


def train_latentebm(X, W0, epochs, steps):
    """``latentebm.SparseCoding`` (online block-coordinate update), float32, defaults."""
    from latentebm import SparseCoding

    want = set(steps)
    snaps: list[tuple[int, float, np.ndarray]] = []
    model = SparseCoding(X.shape[1], N_ATOMS, LAM, init=W0, seed=0)

    def callback(step, m):
        if step in want:
            clk.pause()
            snaps.append((step, clk.elapsed(), m.dictionary().cpu().numpy().astype(np.float64)))
            clk.resume()

    clk = PausableClock()
    model.fit(
        X, epochs=epochs, batch_size=BATCH, method="online", callback=callback, progress=False
    )
    total = clk.elapsed()
    return snaps, total, {"n_steps": model.n_steps_, "dtype": "float32"}


def train_sklearn(X, W0, epochs, steps, fit_algorithm: str, n_jobs: int):
    """scikit-learn ``MiniBatchDictionaryLearning`` on the same stream (shuffle=False)."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    want = set(steps)
    snaps: list[tuple[int, float, np.ndarray]] = []

    def callback(env):
        step = env["i"] + 1
        if step in want:
            clk.pause()
            snaps.append((step, clk.elapsed(), env["dictionary"].T.astype(np.float64)))
            clk.resume()

    mb = MiniBatchDictionaryLearning(
        n_components=N_ATOMS,
        alpha=LAM,
        batch_size=BATCH,
        max_iter=epochs,
        fit_algorithm=fit_algorithm,
        n_jobs=n_jobs,
        dict_init=W0.T.astype(X.dtype),
        shuffle=False,
        tol=0.0,
        max_no_improvement=None,
        random_state=0,
        callback=callback,
    )
    clk = PausableClock()
    mb.fit(X)
    total = clk.elapsed()
    return snaps, total, {"n_steps": int(mb.n_steps_), "dtype": str(X.dtype)}


def train_spams(worker, X, W0, epochs, steps):
    """SPAMS ``trainDL`` resumed chunk by chunk (its model A, B, iter carried over)."""
    n_steps = epochs * math.ceil(X.shape[0] / BATCH)
    worker.load("Xdl", X, transpose=True)
    worker.load("D0", W0, transpose=False)
    bounds = [0, *steps]
    D, info = worker.run_for_array(
        "trainDL", X="Xdl", D0="D0", lambda1=LAM, batchsize=BATCH, boundaries=bounds
    )
    snaps = [
        (s, t, D[i + 1]) for i, (s, t) in enumerate(zip(steps, info["seconds"][1:], strict=True))
    ]
    return (
        snaps,
        info["seconds"][-1],
        {"n_steps": n_steps, "dtype": "float64", "spams_iter": info["final_iter"]},
    )


# ----------------------------------------------------------------------------- scoring


def held_out_energies(Xte: np.ndarray, snaps, W0: np.ndarray) -> list[float]:
    """Mean held-out energy of each snapshot (outside any timed region).

    Codes: latentebm FISTA in float32 to a certified relative duality gap of ``EVAL_TOL`` per
    patch (so each energy is within ``EVAL_TOL`` of its minimum; support polishing usually
    makes it exact), warm-started from the previous snapshot's codes; the energy itself is
    computed in float64.
    """
    out = []
    z = None
    X32 = Xte.astype(np.float32)
    for W in [W0] + [s[2] for s in snaps]:
        res = latentebm.fista(X32, W.astype(np.float32), LAM, tol=EVAL_TOL, max_iter=20000, z0=z)
        z = res.z
        out.append(float(lasso_energy64(Xte, W, z, LAM).mean()))
    return out


def run(args, env: dict, worker) -> dict:
    quick = args.quick
    n_train = 2560 if quick else 100000
    n_test = 500 if quick else 10000
    epochs = 1 if quick else args.b2_epochs
    load0 = os.getloadavg()
    t_all = clock()
    X, source = patches(n_train + n_test, size=SIZE, seed=0)
    Xtr, Xte = X[:n_train], X[n_train:].astype(np.float64)
    rng = np.random.default_rng(1)
    W0 = Xtr[rng.choice(n_train, N_ATOMS, replace=False)].T.astype(np.float64)
    W0 /= np.linalg.norm(W0, axis=0, keepdims=True)
    total_steps = epochs * math.ceil(n_train / BATCH)
    steps = snapshot_steps(total_steps)
    warnings.filterwarnings("ignore", module="sklearn")
    log(
        f"B2: {n_train} train / {n_test} held-out patches ({source}), {total_steps} steps, "
        f"snapshots at {steps}"
    )

    contenders = [
        (
            "latentebm",
            'latentebm `SparseCoding.fit(method="online")` (float32)',
            lambda: train_latentebm(Xtr, W0, epochs, steps),
        ),
        (
            "sklearn-cd",
            'scikit-learn `MiniBatchDictionaryLearning` (fit_algorithm="cd", '
            "n_jobs=1, float32 data)",
            lambda: train_sklearn(Xtr, W0, epochs, steps, "cd", 1),
        ),
    ]
    if worker is not None:
        contenders.append(
            (
                "spams",
                "SPAMS `trainDL` (mode=2, float64, numThreads=2)",
                lambda: train_spams(worker, Xtr, W0, epochs, steps),
            )
        )
    results = []
    for key, label, train in contenders:
        log(f"  B2 training: {label}")
        try:
            snaps, total, info = train()
        except ImportError as exc:
            log(f"  skipped {key}: {exc}")
            results.append({"key": key, "label": label, "skipped": str(exc)})
            continue
        log(
            f"    trained in {total:.1f} s (clock paused for snapshots); scoring "
            f"{len(snaps)} snapshots"
        )
        t_eval = clock()
        energies = held_out_energies(Xte, snaps, W0)
        results.append(
            {
                "key": key,
                "label": label,
                "train_seconds": total,
                "steps": [0] + [s[0] for s in snaps],
                "seconds": [0.0] + [s[1] for s in snaps],
                "energy": energies,
                "eval_seconds": clock() - t_eval,
                "atom_norms_final": _norm_range(snaps[-1][2]) if snaps else None,
                **info,
            }
        )
        log(
            f"    held-out energy {energies[0]:.5g} -> {energies[-1]:.5g} "
            f"(scored in {clock() - t_eval:.0f} s)"
        )
    done = [r for r in results if "energy" in r]
    best = min(r["energy"][-1] for r in done) if done else None
    for r in done:
        target = best * (1 + WITHIN)
        hit = [t for t, e in zip(r["seconds"], r["energy"], strict=True) if e <= target]
        r["time_to_within"] = hit[0] if hit else None
    return {
        "n_train": n_train,
        "n_test": n_test,
        "epochs": epochs,
        "batch_size": BATCH,
        "lam": LAM,
        "n_atoms": N_ATOMS,
        "patch": SIZE,
        "data": source,
        "eval_tol": EVAL_TOL,
        "best_final_energy": best,
        "contenders": results,
        "quick": quick,
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "seconds": clock() - t_all,
        "env": env,
    }


def _norm_range(W: np.ndarray) -> list[float]:
    n = np.linalg.norm(W, axis=0)
    return [float(n.min()), float(n.max())]


# ----------------------------------------------------------------------------- report


def write(out_dir: Path, res: dict) -> None:
    write_json(out_dir / "B2.json", res)
    try:
        _plot(out_dir / "B2.png", res)
        figure = True
    except Exception as exc:  # noqa: BLE001 - the figure is optional
        log(f"B2 plot skipped: {exc}")
        figure = False
    write_atomic(out_dir / "B2.md", render(res, figure))


def render(res: dict, figure: bool = False) -> str:
    lines = [
        "# B2: online dictionary learning on whitened natural patches",
        "",
        f"{res['n_train']} training / {res['n_test']} held-out 12×12 patches "
        f"({res['data']}: Kodak24 in grey, 1/f zero-phase whitening, patch mean removed, unit "
        f"overall variance), {res['n_atoms']} atoms, λ = {res['lam']:g} "
        f"(energy ½‖y − Wz‖² + λ‖z‖₁), minibatch {res['batch_size']}, {res['epochs']} "
        f"epoch(s) over the same sample order, the same initial atoms (random training patches, "
        f"unit norm). Held-out energy: mean over the held-out patches with z from FISTA "
        f"(float32, certified relative gap ≤ {res['eval_tol']:g} per patch, energy in float64), "
        f"computed outside the timed region (the training clock is paused while snapshots are "
        f"copied out). Time to within 1 %: first snapshot "
        f"whose held-out energy is ≤ 1.01 × the best final energy of any contender "
        f"({res['best_final_energy']:.5g}); resolution is the snapshot spacing.",
        "",
        "## Environment",
        "",
        *environment_lines(res["env"]),
        f"- Load average {res['loadavg_start'][0]:.1f} → {res['loadavg_end'][0]:.1f}"
        + (" (quick run)" if res["quick"] else ""),
        "",
    ]
    done = [r for r in res["contenders"] if "energy" in r]
    ref = next((r for r in done if r["key"] == "latentebm"), None)
    rows = []
    for r in done:
        t = r["time_to_within"]
        ratio = t / ref["time_to_within"] if ref and t and ref["time_to_within"] else None
        rows.append(
            [
                r["label"],
                f"{r['energy'][-1]:.5g}",
                f"{100 * (r['energy'][-1] / res['best_final_energy'] - 1):.2f} %",
                fmt_time(t) if t is not None else "not reached",
                fmt_ratio(ratio),
                fmt_time(r["train_seconds"]),
                f"{r['train_seconds'] / max(r['n_steps'], 1) * 1e3:.1f} ms",
            ]
        )
    for r in res["contenders"]:
        if "skipped" in r:
            rows.append([r["label"], "skipped: " + r["skipped"], "", "", "", "", ""])
    header = [
        "contender",
        "final held-out energy",
        "above best",
        "time to within 1 %",
        "× latentebm",
        "training time",
        "per step",
    ]
    lines += ["## Results", "", markdown_table(header, rows), ""]
    # Curves.
    lines += ["## Held-out energy against training time", ""]
    header = ["step"] + [r["key"] for r in done]
    rows = []
    steps = done[0]["steps"] if done else []
    for i, s in enumerate(steps):
        rows.append(
            [str(s)] + [f"{r['energy'][i]:.5g} @ {fmt_time(r['seconds'][i])}" for r in done]
        )
    lines += [markdown_table(header, rows), ""]
    if figure:
        lines += ["![held-out energy vs time](B2.png)", ""]
    return "\n".join(lines) + "\n"


def _plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in res["contenders"]:
        if "energy" in r:
            ax.plot(np.maximum(r["seconds"], 1e-2), r["energy"], marker="o", ms=3, label=r["key"])
    if res["best_final_energy"]:
        ax.axhline(
            res["best_final_energy"] * (1 + WITHIN),
            color="grey",
            ls=":",
            lw=1,
            label="best final + 1 %",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training wall-clock time (s)")
    ax.set_ylabel("held-out energy (mean)")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
