"""How close can a convolutional PSD encoder be to its decoder? The least-squares linear
predictor of the codes, against the learned encoders of a ``conv-filters`` run.

For each model of a finished ``latentebm conv-filters`` run folder, the training tiles are rebuilt
from the run's ``config.json``, their codes solved (``beta = 0``), and the best linear predictor
of every code map from the image's ``k × k`` patches fitted by least squares, restricted to the
patch directions whose variance is at least a share of the mean (whitened photographs excite
only some of the ``k²`` directions). Printed per model: the mean ``|cos|`` between encoder and
decoder filters (the report's ``encoder_decoder_similarity_mean``), and the same for the
least-squares predictor, with the correlation each reaches with the codes. A predictor far from
the decoder that predicts the codes better says the objective, not the optimiser, sets the
similarity.

Usage (from the repository root, a few minutes on one thread)::

    .venv/bin/python benchmarks/conv_encoder_predictor.py docs/reproduce-full/conv-filters
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from latentebm.data.images import load_images
from latentebm.experiments import conv_autoencoder_runs as runs
from latentebm.models.conv_autoencoder import ConvSparseAutoencoder

SHARES = (1e-4, 1e-2, 1e-1)
"""Patch directions kept: variance at least this share of the mean variance."""


def mean_abs_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of ``|cos|`` between ``a`` and ``b`` ``(n_filters, d)``."""
    return float(((a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)).mean())


def correlation(patches: torch.Tensor, filters: torch.Tensor, codes: torch.Tensor) -> float:
    """Correlation (uncentred) of the linear responses ``filters ⋆ y`` with the codes.

    ``patches`` ``(n, d, L)``, ``filters`` ``(M, d)``, ``codes`` ``(n, M, L)``."""
    pred = torch.einsum("nil,mi->nml", patches, filters)
    return float((pred * codes).sum() / (pred.norm() * codes.norm()).clamp_min(1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished conv-filters output folder")
    parser.add_argument("--tiles", type=int, default=50, help="training tiles used (default 50)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.loads((args.run / "config.json").read_text())
    images = runs.preprocess(load_images(cfg["images"], grey=True), cfg["preprocess"])
    train, _ = runs.image_tiles(images, cfg["tile"], cfg["n_tiles"], cfg["n_test"], cfg["seed"],
                                taper=cfg["taper"])
    Y = torch.from_numpy(train[: args.tiles]).double()
    k = cfg["kernel"]
    patches = F.unfold(F.pad(Y, (k - 1,) * 4), k)  # what the encoder's correlation sees
    variance, directions = torch.linalg.eigh(torch.einsum("nil,njl->ij", patches, patches))
    print(f"{args.run}: {len(Y)} tiles, {k}x{k} patches; directions with variance ≥ "
          + ", ".join(f"{s:g}" for s in SHARES) + " of the mean: "
          + ", ".join(str(int((variance >= s * variance.mean()).sum())) for s in SHARES)
          + f" of {len(variance)}")
    print("filters | learned: cos with decoder, correlation with codes | least squares "
          "(per share): cos, correlation")
    for count in cfg["counts"]:
        model = ConvSparseAutoencoder.load(args.run / f"model_{count:02d}.safetensors").double()
        codes = model.infer(Y, tol=1e-3, max_iter=300, beta=0.0).z.flatten(2)
        decoder = model.decoder.detach().flatten(1)
        encoder = model.encoder.detach().flatten(1)
        cross = torch.einsum("nil,nml->mi", patches, codes)
        fits = []
        for share in SHARES:
            keep = variance >= share * variance.mean()
            basis = directions[:, keep]
            ls = (cross @ basis) / variance[keep] @ basis.T
            fits.append(f"{mean_abs_cos(ls, decoder):.3f}, {correlation(patches, ls, codes):.3f}")
        print(f"{count:7d} | {mean_abs_cos(encoder, decoder):.3f}, "
              f"{correlation(patches, encoder, codes):.3f} | " + " | ".join(fits))


if __name__ == "__main__":
    main()
