"""B3: convolutional sparse coding of one 256x256 grey image, latentebm's FISTA against SPORCO.

Problem (identical for every contender, circular boundaries as in SPORCO's ``ConvBPDN``):
``min_x ½‖Σ_m d_m ⊛ x_m − s‖² + λ Σ_m ‖x_m‖₁`` with ``s`` the high-pass part of a grey
256x256 crop of Kodak's kodim23, 32 fixed unit-norm 8x8 filters (learned by latentebm's
convolutional dictionary learning on four *other* Kodak images, cached in
``results/raw/b3_filters.npy``), λ = 0.05.

Measure: wall-clock time of the solve alone (construction excluded for SPORCO; latentebm's
timing includes building the operator) to reach a relative energy gap
``(E − E*)/E* <= 1e-4``, where ``E*`` is the best energy of long float64 runs of both libraries.
For every contender the smallest sufficient iteration count is searched (doubling, then
bisection), the solve at that count is timed ``--repeats`` times, and the fastest time is
reported (the machine is shared, so the minimum is the least disturbed measurement).
Energies are always evaluated in float64 by the same NumPy function.

    bash benchmarks/setup_sporco.sh                  # once: SPORCO in benchmarks/.venv-sporco
    .venv/bin/python benchmarks/b3_conv_sparse_coding.py [--threads 2] [--dtype float64]

Writes ``benchmarks/results/B3.md`` and the raw numbers to ``benchmarks/results/raw/B3.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _common import cpu_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RAW = HERE / "results" / "raw"
SPORCO_PYTHON = HERE / ".venv-sporco" / "bin" / "python"
DATA = Path(os.environ.get("LATENTEBM_DATA", "/work/shared/data"))
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
LAM = 0.05
TARGET = 1e-4


# ----------------------------------------------------------------------------- shared (NumPy only)


def pin_threads(n: int) -> None:
    """Before NumPy/SciPy/torch are imported: the BLAS/OpenMP thread counts, and passive
    OpenMP waiting (spinning threads collapse on a shared machine); inherited by the SPORCO
    subprocess."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def tikhonov_highpass(image, lam: float = 10.0, pad: int = 16):
    """``s − l`` where ``l = argmin ½‖l − s‖² + (lam/2)‖∇l‖²`` (periodic differences on the
    mirror-padded image, solved exactly in the Fourier domain)."""
    import numpy as np

    padded = np.pad(image, pad, mode="symmetric")
    h, w = padded.shape
    wy = 2 * np.pi * np.fft.fftfreq(h)[:, None]
    wx = 2 * np.pi * np.fft.rfftfreq(w)[None, :]
    grad2 = 4 * np.sin(wy / 2) ** 2 + 4 * np.sin(wx / 2) ** 2
    low = np.fft.irfft2(np.fft.rfft2(padded) / (1 + lam * grad2), s=(h, w))
    return image - low[pad:-pad, pad:-pad]


def circular_energy(kernels, signal, codes, lam: float, mask=1.0) -> float:
    """``½‖W(Σ_m k_m ⊛ x_m − s)‖² + λ‖x‖₁`` in float64: kernels ``(M, k, k)`` with origin at
    index 0, signal ``(H, W)``, codes ``(M, H, W)``, mask ``W`` ``(H, W)`` (1: SPORCO's
    ``ConvBPDN``; a zero border: its masked problems, e.g. ``ConvBPDNMaskDcpl``)."""
    import numpy as np

    kernels = np.asarray(kernels, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.float64)
    shape = signal.shape
    spectrum = np.fft.rfft2(kernels, s=shape) * np.fft.rfft2(codes)
    residual = mask * (np.fft.irfft2(spectrum.sum(0), s=shape) - signal)
    return float(0.5 * (residual**2).sum() + lam * np.abs(codes).sum())


def search(run, energy_of, target_energy, *, start: int, repeats: int, cap: int):
    """Smallest iteration count whose result is within ``target_energy``, then its best time.

    ``run(n) -> (seconds, result)``; ``energy_of(result) -> float``. Doubling from ``start``
    until the target is met (or ``cap``), then bisection to 3 %. Returns a dict.
    """
    evaluated = {}

    def ok(n: int) -> bool:
        if n not in evaluated:
            seconds, result = run(n)
            evaluated[n] = (seconds, energy_of(result))
        return evaluated[n][1] <= target_energy

    n = start
    while not ok(n):
        if n >= cap:
            return {"reached": False, "iterations": n, "energy": evaluated[n][1],
                    "seconds": float("nan")}
        n = min(2 * n, cap)
    lo, hi = n // 2, n
    while hi - lo > max(1, int(0.03 * hi)):
        mid = (lo + hi) // 2
        if mid <= 0:
            break
        if ok(mid):
            hi = mid
        else:
            lo = mid
    times = [evaluated[hi][0]] + [run(hi)[0] for _ in range(repeats - 1)]
    return {"reached": True, "iterations": hi, "energy": evaluated[hi][1],
            "seconds": min(times), "seconds_median": sorted(times)[len(times) // 2],
            "all_seconds": times}


# ----------------------------------------------------------------------------- SPORCO worker


def sporco_worker() -> None:
    """Runs under the SPORCO venv: JSON requests on stdin, one JSON answer per line."""
    import numpy as np
    import sporco
    import sporco.fft
    from sporco.admm import cbpdn as admm_cbpdn
    from sporco.pgm import cbpdn as pgm_cbpdn
    from sporco.pgm.backtrack import BacktrackStandard

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    sporco.fft.pyfftw_threads = threads
    state: dict = {}
    print("@@" + json.dumps({"ready": True, "sporco": sporco.__version__,
                             "numpy": np.__version__, "pyfftw": sporco.fft.have_pyfftw}),
          flush=True)

    def solve(req):
        dtype = np.float32 if req["dtype"] == "float32" else np.float64
        D = state["D"].astype(dtype)
        S = state["S"].astype(dtype)
        n = int(req["n"])
        mask = state.get("W")
        if req["solver"] in ("admm_mask_dcpl", "admm_ams"):  # masked: S is zero-padded
            ams = req["solver"] == "admm_ams"
            options = admm_cbpdn.ConvBPDN.Options if ams else admm_cbpdn.ConvBPDNMaskDcpl.Options
            opt = options({"MaxMainIter": n, "RelStopTol": 0.0, "FastSolve": True,
                           "Verbose": False, "DataType": dtype, **req.get("options", {})})
            if ams:
                solver = admm_cbpdn.AddMaskSim(admm_cbpdn.ConvBPDN, D, S, mask.astype(dtype),
                                               LAM, opt)
            else:
                solver = admm_cbpdn.ConvBPDNMaskDcpl(D, S, LAM, mask.astype(dtype), opt)
        elif req["solver"].startswith("admm"):
            opt = admm_cbpdn.ConvBPDN.Options({
                "MaxMainIter": n, "RelStopTol": 0.0, "FastSolve": True, "Verbose": False,
                "DataType": dtype, **req.get("options", {})})
            solver = admm_cbpdn.ConvBPDN(D, S, LAM, opt)
        else:
            extra = dict(req.get("options", {}))
            if extra.pop("backtrack", False):
                extra["Backtrack"] = BacktrackStandard()
            opt = pgm_cbpdn.ConvBPDN.Options({
                "MaxMainIter": n, "RelStopTol": 0.0, "FastSolve": True, "Verbose": False,
                "DataType": dtype, **extra})
            solver = pgm_cbpdn.ConvBPDN(D, S, LAM, opt)
        t0 = time.perf_counter()
        solver.solve()
        seconds = time.perf_counter() - t0
        kernels = state["D"].transpose(2, 0, 1)
        candidates = [np.asarray(solver.getcoef())]
        if req["solver"] == "admm" and hasattr(solver, "Y"):
            candidates.append(np.asarray(solver.Y))  # ConvBPDN's exactly sparse split variable
        energies = [circular_energy(kernels, state["S"],
                                    c.reshape(S.shape + (-1,)).transpose(2, 0, 1), LAM,
                                    1.0 if mask is None else mask)
                    for c in candidates]
        return {"seconds": seconds, "energy": min(energies)}

    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "quit":
                break
            if req["op"] == "load":
                state["D"] = np.load(req["D"])  # (k, k, M)
                state["S"] = np.load(req["S"])
                state["W"] = np.load(req["W"]) if req.get("W") else None
                out = {"ok": True}
            else:
                out = {"ok": True, **solve(req)}
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print("@@" + json.dumps(out), flush=True)


class Sporco:
    """The parent's handle on the worker process."""

    def __init__(self, D, S, tmp: Path, mask=None) -> None:
        import numpy as np

        self.proc = subprocess.Popen(
            [str(SPORCO_PYTHON), "-u", str(Path(__file__).resolve()), "--sporco-worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        self.info = self._read()
        np.save(tmp / "D.npy", D)
        np.save(tmp / "S.npy", S)
        request = {"op": "load", "D": str(tmp / "D.npy"), "S": str(tmp / "S.npy")}
        if mask is not None:
            np.save(tmp / "W.npy", mask)
            request["W"] = str(tmp / "W.npy")
        self.call(request)

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"SPORCO worker exited with code {self.proc.wait()}")

    def call(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if not out.get("ok"):
            raise RuntimeError(out.get("error"))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


# ----------------------------------------------------------------------------- the benchmark


def load_image(name: str, crop: int = 256):
    import numpy as np
    from skimage import io
    from skimage.color import rgb2gray
    from skimage.util import img_as_float64

    img = img_as_float64(io.imread(DATA / "kodak24" / name))
    grey = rgb2gray(img[..., :3]) if img.ndim == 3 else img
    h, w = grey.shape
    r, c = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(grey[r : r + crop, c : c + crop])


def fixed_filters(threads: int):
    """32 unit-norm 8x8 filters learned by latentebm on kodim01..04 (not the test image);
    cached so that every run of the benchmark uses the same ones."""
    import numpy as np
    import torch

    import latentebm as le

    path = RAW / "b3_filters.npy"
    if path.exists():
        return np.load(path)
    crops = np.stack([tikhonov_highpass(load_image(f"kodim{i:02d}.png", 128))
                      for i in range(1, 5)])
    model = le.ConvDictionaryLearning(32, 8, 1, lam=LAM, boundary="circular", seed=0,
                                      dtype=torch.float64)
    model.fit(torch.from_numpy(crops[:, None]), epochs=60, batch_size=4, max_iter=100,
              progress=False)
    K = model.dictionary()[:, 0].numpy()
    RAW.mkdir(parents=True, exist_ok=True)
    np.save(path, K)
    return K


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "B3.md"))
    parser.add_argument("--methods", nargs="+", default=["admm", "fista"],
                        help="latentebm methods to time (solve(method=...))")
    parser.add_argument("--self-stopping", nargs="*", default=["admm"],
                        help="methods also timed stopping on their own certificate")
    parser.add_argument("--quick", action="store_true",
                        help="SPORCO's ADMM rows only (skip its slower FISTA rows)")
    for run, default in (("ADMM", 3000), ("FISTA", 5000), ("SPORCO ADMM", 3000)):
        parser.add_argument(f"--{run.split()[0].lower()}-reference", type=int, default=default,
                            help=f"iterations of the {run} reference run for E*")
    parser.add_argument("--sporco-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sporco_worker:
        sporco_worker()
        return
    pin_threads(args.threads)
    import torch

    import latentebm as le

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    K = fixed_filters(args.threads)  # (32, 8, 8)
    S = tikhonov_highpass(load_image("kodim23.png"))
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    S_t = torch.from_numpy(S)[None, None].to(dtype)
    K_t = torch.from_numpy(K)[:, None].to(dtype)

    def energy_ours(z) -> float:
        return circular_energy(K, S, z[0].double().numpy(), LAM)

    def run_ours(n: int, check_every: int | None = None, tol: float = 0.0, inputs=None,
                 method: str = "fista"):
        signal, kernels = inputs or (S_t, K_t)
        t0 = time.perf_counter()
        op = le.ConvDictionary(kernels, boundary="circular")
        result = le.solve(signal, op, LAM, method=method, max_iter=n, tol=tol,
                          check_every=check_every or n)
        return time.perf_counter() - t0, result

    # Long reference runs in float64 (ours, and SPORCO's ADMM below); E* is the best of them.
    S64, K64 = torch.from_numpy(S)[None, None], torch.from_numpy(K)[:, None]
    e_star = min(
        energy_ours(le.solve(S64, le.ConvDictionary(K64, boundary="circular"), LAM,
                             method=method, max_iter=max_iter, tol=1e-12).z)
        for method, max_iter in (("admm", args.admm_reference),
                                 ("fista", args.fista_reference)))
    lam_max = float(le.ConvDictionary(torch.from_numpy(K)[:, None], boundary="circular")
                    .adjoint(torch.from_numpy(S)[None, None]).abs().max())

    RAW.mkdir(parents=True, exist_ok=True)
    rows = []
    sporco = None
    sporco_note = "SPORCO not installed: run `bash benchmarks/setup_sporco.sh`"
    if SPORCO_PYTHON.exists():
        sporco = Sporco(K.transpose(1, 2, 0).copy(), S, RAW)
        sporco_note = (f"SPORCO {sporco.info['sporco']} (NumPy {sporco.info['numpy']}, "
                       f"pyfftw {'yes' if sporco.info['pyfftw'] else 'no'})")
        long = sporco.call({"op": "solve", "solver": "admm", "n": args.sporco_reference,
                            "dtype": "float64"})
        e_star = min(e_star, long["energy"])
    target = e_star * (1 + TARGET)
    lipschitz = float(le.ConvDictionary(torch.from_numpy(K)[:, None], boundary="circular")
                      .lipschitz((1, 256, 256)))

    inputs32 = (S_t.float(), K_t.float())
    for method in args.methods:
        name = method.upper()
        ours = search(lambda n, m=method: run_ours(n, method=m), lambda r: energy_ours(r.z),
                      target, start=16, repeats=args.repeats, cap=20_000)
        # How loose is the duality-gap certificate at the point that reaches the target?
        _, at_target = run_ours(ours["iterations"], method=method)
        ours["gap_over_energy"] = float(at_target.gap[0] / at_target.energy[0])
        rows.append((f"latentebm {name} (fixed iterations)", ours))
        if args.dtype == "float64":
            # An extra row, outside the float64-vs-float64 comparison: the same solve in
            # float32 (energies still evaluated in float64).
            ours32 = search(lambda n, m=method: run_ours(n, inputs=inputs32, method=m),
                            lambda r: energy_ours(r.z), target, start=16,
                            repeats=args.repeats, cap=20_000)
            ours32["extra"] = True
            rows.append((f"latentebm {name} float32 (extra row, not in the ratio)", ours32))
        if method not in args.self_stopping:
            continue
        certified = []
        for _ in range(args.repeats):
            seconds, result = run_ours(20_000, check_every=10, tol=TARGET, method=method)
            certified.append((seconds, result))
        best = min(certified, key=lambda p: p[0])
        rows.append((f"latentebm {name} (stops itself: duality gap <= 1e-4 E)", {
            "reached": energy_ours(best[1].z) <= target, "iterations": int(best[1].n_iter),
            "energy": energy_ours(best[1].z), "seconds": best[0],
            "seconds_median": sorted(p[0] for p in certified)[len(certified) // 2],
            "all_seconds": [p[0] for p in certified],
            "certified_gap": float(best[1].gap[0] / best[1].energy[0])}))

    if sporco is not None:
        def sporco_run(solver, options=None, dtype=args.dtype):
            def run(n):
                out = sporco.call({"op": "solve", "solver": solver, "n": n, "dtype": dtype,
                                   "options": options or {}})
                return out["seconds"], out["energy"]
            return run

        contenders = [
            ("SPORCO admm.cbpdn.ConvBPDN (defaults: ρ = 50λ + 1, adaptive ρ)", "admm", {}),
            ("SPORCO admm.cbpdn.ConvBPDN (fixed ρ = 50λ + 1)", "admm",
             {"AutoRho": {"Enabled": False}}),
            ("SPORCO admm.cbpdn.ConvBPDN (fixed ρ = 10λ + 1)", "admm",
             {"rho": 10 * LAM + 1, "AutoRho": {"Enabled": False}}),
        ]
        if not args.quick:
            contenders += [
                ("SPORCO pgm.cbpdn.ConvBPDN (FISTA, L = exact ‖D‖²)", "pgm", {"L": lipschitz}),
                ("SPORCO pgm.cbpdn.ConvBPDN (FISTA, backtracking)", "pgm",
                 {"L": 1.0, "backtrack": True}),
            ]
        if args.dtype == "float64":
            contenders += [(label.replace("SPORCO", "SPORCO float32") + " (extra row)", solver,
                            {**options, "dtype": "float32"})
                           for label, solver, options in contenders[2 if args.quick else 0:3]]
        for label, solver, options in contenders:
            options = dict(options)
            dtype = options.pop("dtype", args.dtype)
            try:
                res = search(sporco_run(solver, options, dtype), lambda e: e, target, start=16,
                             repeats=args.repeats, cap=5000)
            except RuntimeError as exc:
                res = {"reached": False, "error": str(exc), "seconds": float("nan"),
                       "iterations": 0, "energy": float("nan")}
            res["extra"] = dtype != args.dtype
            rows.append((label, res))
        sporco.close()

    load_after = os.getloadavg()
    write_report(args, rows, e_star, lam_max, lipschitz, sporco_note, load_before, load_after)


def write_report(args, rows, e_star, lam_max, lipschitz, sporco_note, load_before, load_after):
    import numpy as np
    import torch

    import latentebm as le

    reached = [r for _, r in rows if r.get("reached")]
    ours_best = min(r["seconds"] for label, r in rows if label.startswith("latentebm")
                    and r.get("reached") and not r.get("extra"))
    sporco_times = [r["seconds"] for label, r in rows if label.startswith("SPORCO")
                    and r.get("reached") and not r.get("extra")]
    lines = [
        "# B3: convolutional sparse coding, latentebm vs SPORCO",
        "",
        "How to reproduce:",
        "",
        "```",
        "bash benchmarks/setup_sporco.sh",
        ".venv/bin/python benchmarks/b3_conv_sparse_coding.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"- Problem: ½‖Σ_m d_m ⊛ x_m − s‖² + λ‖x‖₁ with circular boundaries (SPORCO's "
        f"ConvBPDN problem exactly); s = Tikhonov high-pass (λ_tik = 10) of the central 256x256 "
        f"grey crop of kodim23 (Kodak24, /work/shared/data); 32 unit-norm 8x8 filters learned "
        f"by latentebm on kodim01-04 (`results/raw/b3_filters.npy`); λ = {LAM} "
        f"(λ/λ_max = {LAM / lam_max:.3f}); ‖D‖² = {lipschitz:.4g}.",
        f"- Target: (E − E*)/E* ≤ {TARGET:g}, E* = {e_star:.10g} (best of latentebm ADMM to "
        f"a 1e-12 duality gap or {args.admm_reference} iterations, FISTA to 1e-12 or "
        f"{args.fista_reference} iterations, and SPORCO ADMM x{args.sporco_reference}, all "
        "float64). "
        "Energies of every result are evaluated by one float64 NumPy function.",
        f"- Precision: {args.dtype} for every contender. Threads: {args.threads} for every "
        "contender (OMP/MKL/OpenBLAS variables, torch.set_num_threads, "
        "sporco.fft.pyfftw_threads).",
        f"- Time: the solve only (SPORCO's object construction is not timed; latentebm's "
        f"includes building the operator); best of {args.repeats} runs at the smallest "
        "sufficient iteration count (median in brackets). The machine is shared with other "
        f"users: load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical "
        f"CPUs; Python {platform.python_version()}, torch {torch.__version__}, NumPy "
        f"{np.__version__}, latentebm {le.__version__}; {sporco_note}.",
        "- Rows marked float32 / extra run in float32 (scored in float64) and are outside the "
        f"{args.dtype} ratios; the last column is time / fastest {args.dtype} latentebm row.",
        "",
        "| contender | iterations | time to 1e-4 (s) | ms / iteration | final (E − E*)/E* "
        "| vs fastest latentebm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        if r.get("reached"):
            t = f"{r['seconds']:.3f} ({r['seconds_median']:.3f})"
            per = f"{1e3 * r['seconds'] / max(r['iterations'], 1):.1f}"
            ratio = f"{r['seconds'] / ours_best:.2f}x"
        else:
            t, per, ratio = "not reached", "-", "-"
        rel = (r["energy"] - e_star) / e_star if np.isfinite(r.get("energy", np.nan)) else np.nan
        lines.append(f"| {label} | {r['iterations']} | {t} | {per} | {rel:.1e} | {ratio} |")
    if sporco_times:
        lines += ["", f"Fastest SPORCO / fastest latentebm = {min(sporco_times) / ours_best:.2f}"
                  f" (float{args.dtype[-2:]}; target of issue 13: at least 3)."]
        for label, r in rows:
            if label.startswith("latentebm") and r.get("reached"):
                lines.append(f"- SPORCO's fastest {args.dtype} / {label}: "
                             f"{min(sporco_times) / r['seconds']:.2f}")
        for precision in ("float32",):
            theirs = [r["seconds"] for label, r in rows if label.startswith("SPORCO "
                      + precision) and r.get("reached")]
            mine = [r["seconds"] for label, r in rows if label.startswith("latentebm")
                    and precision in label and r.get("reached")]
            if theirs and mine:
                lines.append(f"- {precision}: fastest SPORCO / fastest latentebm = "
                             f"{min(theirs) / min(mine):.2f}")
    for label, r in rows:
        if "stops itself" not in label:
            continue
        oracle = [o for name, o in rows if name == label.split(" (")[0] + " (fixed iterations)"
                  and o.get("reached")]
        ratio = f"; {r['seconds'] / oracle[0]['seconds']:.2f}x the oracle-stopped run" \
            if oracle and r.get("reached") else ""
        lines += ["", f"{label.split(' (')[0]} stopping itself certifies gap/E = "
                  f"{r['certified_gap']:.1e} without knowing E* (the duality gap bounds "
                  f"E − E*){ratio} (target of issues 12/13: at most 1.3x)."]
    for label, r in rows:
        if "fixed iterations" in label and "gap_over_energy" in r:
            lines += ["", f"{label}: at the point that reaches (E − E*)/E* ≤ {TARGET:g} its "
                      f"certificate says gap/E = {r['gap_over_energy']:.1e}."]
    if not reached:
        lines += ["", "No contender reached the target."]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (RAW / "B3.json").write_text(json.dumps({"rows": rows, "e_star": e_star}, indent=2,
                                            default=float))
    print(text)


if __name__ == "__main__":
    main()
