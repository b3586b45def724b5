"""One-command device check: the test suite on the device, B1 at scale against the best CPU
peer, FISTA's iteration against a bare matmul, LISTA codes/s, VAE training images/s, and B3/B4's
convolutional problems on the device against the host CPU.

Usage::

    .venv/bin/python benchmarks/gpu.py --device cuda           # make gpu-check (< 8 min)
    .venv/bin/python benchmarks/gpu.py --device cpu --tiny     # smoke run (the test suite does)

Writes ``benchmarks/results/GPU.md`` (``--out`` to change). B1 here: ``--n-signals`` signals
(default 100 000; MNIST test digits repeated when ``LATENTEBM_DATA`` or ``/work/shared/data``
holds MNIST, else synthetic sparse signals), a random Gaussian 784 × 256 dictionary with unit
columns, λ = 0.1·λ_max; latentebm FISTA on the device (float32 and float64) against
scikit-learn ``sparse_encode("lasso_cd", n_jobs=<all CPU cores>)`` and latentebm
``solve(method="gram_cd")`` in float64 on the host (all cores). Each row's energy error is
relative to the best of all, per sample summed.

Convolutional rows (B3's and B4's problems, ``benchmarks/b3_conv_sparse_coding.py`` and
``b4_conv_dictionary_learning.py``): ``solve(method="admm")`` on the Kodak crop to ``tol=1e-4``
and ``ConvDictionaryLearning`` for 40 outer iterations (FISTA ≤ 5 iterations, 5 kernel steps),
each on the device and on the host CPU (all cores), float64; synthetic images where Kodak24 is
missing, smaller sizes with ``--tiny``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 1):
    """Best wall time of ``repeats`` calls of ``fn`` (device synchronised), and its output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_tests(device: str, timeout: float) -> str:
    """The test suite with ``--device``; returns pytest's summary line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "--no-header", "-p", "no:cacheprovider",
           f"--device={device}", "tests"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"pytest exited {proc.returncode}"


def signals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``(n, 784)`` float64 signals: MNIST test digits (repeated) or synthetic sparse ones."""
    try:
        from latentebm.data import load_mnist

        root = os.environ.get("LATENTEBM_DATA", "/work/shared/data")
        X, _ = load_mnist("test", data_dir=str(Path(root) / "mnist"), download=False)
        X = X.reshape(len(X), -1).astype(np.float64) / 255.0
        return X[np.arange(n) % len(X)], "MNIST test digits (repeated)"
    except Exception:  # noqa: BLE001 - any missing-data error falls back to synthetic data
        D = rng.standard_normal((784, 256))
        Z = rng.standard_normal((n, 256)) * (rng.random((n, 256)) < 0.05)
        return Z @ D.T / 16 + 0.01 * rng.standard_normal((n, 784)), "synthetic sparse signals"


def b1(device: torch.device, n: int, tol: float) -> list[tuple]:
    """latentebm FISTA on the device vs scikit-learn lasso_cd on every host core."""
    from sklearn.decomposition import sparse_encode

    import latentebm

    rng = np.random.default_rng(0)
    Y, source = signals(n, rng)
    W = rng.standard_normal((784, 256))
    W /= np.linalg.norm(W, axis=0)
    lam = 0.1 * float(np.abs(Y @ W).max())
    rows, energies = [], {}

    def energy(Z: np.ndarray) -> np.ndarray:
        R = Y - Z @ W.T
        return 0.5 * (R * R).sum(1) + lam * np.abs(Z).sum(1)

    for dtype in (torch.float32, torch.float64):
        Yt = torch.from_numpy(Y).to(device, dtype)
        Wt = torch.from_numpy(W).to(device, dtype)
        latentebm.fista(Yt[:64], Wt, lam, tol=tol)  # warm-up (kernels, Lipschitz cache)
        t, res = timed(lambda Yt=Yt, Wt=Wt: latentebm.fista(Yt, Wt, lam, tol=tol), device)
        label = f"latentebm fista {str(dtype).split('.')[-1]} on {device.type}, tol={tol:g}"
        energies[label] = energy(res.z.double().cpu().numpy())
        rows.append((label, t))
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    Z = sparse_encode(Y, W.T, algorithm="lasso_cd", alpha=lam, n_jobs=cores)
    label = f"scikit-learn sparse_encode(lasso_cd) float64, n_jobs={cores} (host CPU)"
    energies[label] = energy(Z)
    rows.append((label, time.perf_counter() - t0))
    threads = torch.get_num_threads()
    torch.set_num_threads(cores)
    latentebm.solve(Y[:64], W, lam, method="gram_cd", tol=tol)  # compiles (or loads) the kernel
    t0 = time.perf_counter()
    res = latentebm.solve(Y, W, lam, method="gram_cd", tol=tol)
    label = f"latentebm solve(method=\"gram_cd\") float64, {cores} threads (host CPU), tol={tol:g}"
    rows.append((label, time.perf_counter() - t0))
    energies[label] = energy(res.z)
    torch.set_num_threads(threads)
    best = np.minimum.reduce(list(energies.values())).sum()
    return [(label, t, (energies[label].sum() - best) / best, source, lam) for label, t in rows]


def fista_vs_matmul(device: torch.device, n: int) -> list[tuple]:
    """Seconds per batched FISTA iteration (60 − 10 iterations, no checks, no polish) against a
    bare (n×256)@(256×256) matmul, per dtype."""
    import latentebm

    out = []
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        W = torch.randn(784, 256, generator=gen, dtype=torch.float64)
        W = (W / W.norm(dim=0)).to(device, dtype)
        Y = torch.randn(n, 784, generator=gen, dtype=torch.float64).to(device, dtype)
        lam = 0.1 * float((Y @ W).abs().max())

        def run(k: int, Y=Y, W=W, lam=lam):
            return latentebm.fista(Y, W, lam, tol=0.0, max_iter=k, check_every=10**6,
                                   polish=False, backtracking=False)

        run(10)
        t60, _ = timed(lambda: run(60), device, 2)
        t10, _ = timed(lambda: run(10), device, 2)
        per_iter = max(t60 - t10, 1e-12) / 50
        Z = torch.randn(n, 256, generator=gen, dtype=torch.float64).to(device, dtype)
        G = W.T @ W
        t_mm, _ = timed(lambda Z=Z, G=G: Z @ G, device, 5)
        out.append((str(dtype).split(".")[-1], n, per_iter, t_mm, t_mm / per_iter))
    return out


def lista_codes_per_s(device: torch.device, n: int) -> float:
    import latentebm

    gen = torch.Generator().manual_seed(0)
    W = torch.randn(784, 256, generator=gen)
    W = (W / W.norm(dim=0)).to(device)
    model = latentebm.LISTA(W, 0.1, 3)
    Y = torch.rand(n, 784, generator=gen).to(device)
    model.encode(Y[:64])
    t, _ = timed(lambda: model.encode(Y), device, 3)
    return n / t


def vae_images_per_s(device: torch.device, n_batches: int, batch: int = 128) -> float:
    import latentebm

    vae = latentebm.VAE(784, 20, device=device)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(n_batches, batch, 784, generator=gen).to(device)

    def train():
        for xb in X:
            opt.zero_grad(set_to_none=True)
            vae(xb).loss.backward()
            opt.step()

    timed(lambda: [train() for _ in range(1)], device)  # warm-up
    t, _ = timed(train, device, 2)
    return n_batches * batch / t


def conv_problems(device: torch.device, tiny: bool) -> list[tuple]:
    """B3's coding and B4's learning, timed on ``device`` and on the host CPU (all cores)."""
    from b3_conv_sparse_coding import LAM as B3_LAM
    from b3_conv_sparse_coding import load_image, tikhonov_highpass
    from b4_conv_dictionary_learning import LAM as B4_LAM
    from b4_conv_dictionary_learning import initial_dictionary

    import latentebm

    rng = np.random.default_rng(0)
    crop, n_images, epochs = (64, 2, 3) if tiny else (256, 10, 40)
    try:
        image = tikhonov_highpass(load_image("kodim23.png", crop))
        images = np.stack([tikhonov_highpass(load_image(f"kodim{i:02d}.png", min(crop, 128)))
                           for i in range(1, n_images + 1)])
        source = "Kodak24"
    except Exception:  # noqa: BLE001 - no Kodak24 here: synthetic smooth images
        image = np.cumsum(rng.standard_normal((crop, crop)), axis=0) / crop
        images = np.cumsum(rng.standard_normal((n_images, min(crop, 128), min(crop, 128))),
                           axis=1) / crop
        source = "synthetic"
    filters = HERE / "results" / "raw" / "b3_filters.npy"
    K = np.load(filters) if filters.exists() else initial_dictionary()
    rows = []
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    for where in dict.fromkeys([device, torch.device("cpu")]):
        torch.set_num_threads(cores if where.type == "cpu" else threads)
        op = latentebm.ConvDictionary(torch.from_numpy(K)[:, None].to(where), boundary="circular")
        S = torch.from_numpy(image)[None, None].to(where)
        latentebm.solve(S[..., :32, :32], op, B3_LAM, method="admm", max_iter=5)  # warm-up
        t, res = timed(lambda S=S, op=op: latentebm.solve(S, op, B3_LAM, method="admm",
                                                          tol=1e-4, max_iter=3000), where)
        rows.append((f"B3: ADMM to 1e-4 on {crop}x{crop} ({source}), {where.type}", t,
                     f"{res.n_iter} iterations"))
        model = latentebm.ConvDictionaryLearning(
            len(K), K.shape[-1], 1, lam=B4_LAM, boundary="circular", seed=0,
            init=initial_dictionary()[:, None], dtype=torch.float64, device=where)
        Y = torch.from_numpy(images)[:, None].to(where)
        t, _ = timed(lambda model=model, Y=Y: model.fit(
            Y, epochs=epochs, batch_size=n_images, tol=0.0, max_iter=5, dict_steps=5,
            replace_threshold=None, progress=False), where)
        rows.append((f"B4: {epochs} outer iterations, {n_images} images ({source}), "
                     f"{where.type}", t, f"final energy {model.history_[-1]['mean_energy']:.4g}"))
    torch.set_num_threads(threads)
    return rows


def render(args, tests: str | None, b1_rows, share, lista, vae, device_name: str,
           conv_rows=()) -> str:
    lines = [
        "# Device check (`benchmarks/gpu.py`)",
        "",
        f"- Device: {device_name}; host CPU cores: {os.cpu_count()}; torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.2f}",
        f"- Command: `python benchmarks/gpu.py --device {args.device}"
        + (" --tiny" if args.tiny else "") + f" --n-signals {args.n_signals}`",
        "",
        "## Test suite with --device",
        "",
        f"`pytest --device={args.device} tests`: {tests if tests is not None else 'skipped'}",
        "",
        f"## B1 at scale ({b1_rows[0][3]}, {args.n_signals} signals, random 784×256 "
        f"dictionary, λ = {b1_rows[0][4]:.4g})",
        "",
        "| contender | time | relative energy error (vs best of all) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {t:.3f} s | {err:.1e} |" for label, t, err, _, _ in b1_rows]
    lines += ["", "## FISTA iteration vs a bare matmul", "",
              "| dtype | n | FISTA iteration | (n×256)@(256×256) | share |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {d} | {n} | {it * 1e3:.3f} ms | {mm * 1e3:.3f} ms | {s:.0%} |"
              for d, n, it, mm, s in share]
    lines += ["", "## Throughput", "",
              f"- LISTA (3 steps, 784→256, float32) codes/s: {lista:,.0f}",
              f"- VAE (784-400-20, batch 128, Adam, float32) training images/s: {vae:,.0f}", ""]
    lines += ["## Convolutional problems (B3, B4), float64", "",
              "| problem and device | time | |", "|---|---:|---|"]
    lines += [f"| {label} | {t:.3f} s | {what} |" for label, t, what in conv_rows]
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-signals", type=int, default=None,
                    help="B1 signals (default 100000; 500 with --tiny)")
    ap.add_argument("--tol", type=float, default=1e-6, help="FISTA's relative-gap tolerance")
    ap.add_argument("--tiny", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--no-tests", action="store_true", help="skip the test suite")
    ap.add_argument("--test-timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(HERE / "results" / "GPU.md"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    if args.n_signals is None:
        args.n_signals = 500 if args.tiny else 100_000
    small = 256 if args.tiny else 10_000
    tests = None if args.no_tests else run_tests(args.device, args.test_timeout)
    b1_rows = b1(device, args.n_signals, args.tol)
    share = fista_vs_matmul(device, small)
    lista = lista_codes_per_s(device, small)
    vae = vae_images_per_s(device, 3 if args.tiny else 50)
    conv_rows = conv_problems(device, args.tiny)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = render(args, tests, b1_rows, share, lista, vae, name, conv_rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
