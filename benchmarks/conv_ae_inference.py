"""Which solver should certify a trained convolutional auto-encoder's codes? FISTA with per-image
backtracking (what ``ConvSparseAutoencoder.infer`` runs) against Fourier ADMM, both warm-started
from the encoder, on the two problems ``conv-colour`` solves: the codes of a whole held-out
photograph and of 100 held-out tiles (``"full"`` boundary, 3 channels, float32).

    .venv/bin/python benchmarks/conv_ae_inference.py MODEL.safetensors [--images DIR]

``MODEL`` is a ``conv-colour`` model (e.g. ``model_32.safetensors`` of
``latentebm reproduce --budget full``); the images are preprocessed as that command does
(whitening, the last photograph held out whole, tiles from the others). Writes
``results/conv_ae_inference.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TOL, MAX_ITER = 1e-3, 1000


def main() -> None:
    import latentebm as le
    from latentebm.experiments import conv_autoencoder_runs as runs
    from latentebm.experiments.conv_colour_cmd import downscale, load_images
    from latentebm.regularizers import L1
    from latentebm.solvers import proximal_gradient

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--images", default=os.path.join(
        os.environ.get("LATENTEBM_DATA", "/work/shared/data"), "kodak24"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model = le.ConvSparseAutoencoder.load(args.model)
    photos = load_images(args.images, grey=False)
    photo = runs.preprocess([downscale(photos[-1], 256)], "whiten")[0]
    _, tiles = runs.image_tiles(runs.preprocess(photos[:-1], "whiten"), 32, 400, 100, 0, taper=0)
    problems = {"whole held-out photograph": photo.transpose(2, 0, 1)[None].copy(),
                "100 held-out tiles 32×32": tiles}
    rows = []
    for name, images in problems.items():
        Y = torch.from_numpy(np.ascontiguousarray(images)).to(model.decoder.dtype)
        with torch.no_grad():
            start_codes, op = model.predict(Y), model.decoder_operator()
        solvers = {
            "FISTA, per-image backtracking": lambda Y=Y, z=start_codes, op=op: proximal_gradient(
                op, Y, model.lam, L1(), tol=TOL, max_iter=MAX_ITER, z0=z, backtracking=True),
            "ADMM (Fourier, masked)": lambda Y=Y, z=start_codes, op=op: le.solve(
                Y, op, model.lam, method="admm", tol=TOL, max_iter=MAX_ITER, z0=z),
        }
        for label, solve in solvers.items():
            start = time.perf_counter()
            with torch.no_grad():
                out = solve()
            seconds = time.perf_counter() - start
            rows.append((name, tuple(Y.shape), label, seconds, out.n_iter,
                         float(out.converged.float().mean()), float(out.energy.sum())))
            print(rows[-1], flush=True)
    lines = [
        "# Certifying a trained colour auto-encoder's codes: FISTA against ADMM",
        "",
        f"How to reproduce: `.venv/bin/python benchmarks/conv_ae_inference.py {args.model}` "
        f"({args.threads} threads; relative gap {TOL:g}, at most {MAX_ITER} iterations, "
        f"warm start from the encoder; one run each). Load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; run "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| codes of | shape | solver | seconds | iterations | certified | total energy |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, shape, label, seconds, n_iter, share, energy in rows:
        lines.append(f"| {name} | {'×'.join(map(str, shape))} | {label} | {seconds:.1f} | "
                     f"{n_iter} | {share:.0%} | {energy:.2f} |")
    (HERE / "results" / "conv_ae_inference.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
