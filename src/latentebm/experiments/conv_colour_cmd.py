"""``latentebm conv-colour``: a convolutional sparse auto-encoder with 9×9×3 kernels on colour
photographs; the kernels, one image's code maps and how sparse those maps are."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from .. import viz
from .._docs import fill_doc
from .._validation import resolve_device
from ..data import load_images
from ..training import distributed
from . import conv_autoencoder_runs as runs
from ._run import Run

NAME = "conv-colour"
HELP = "convolutional sparse auto-encoder on colour photographs: 9x9x3 kernels, sparse code maps"


@fill_doc
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``latentebm conv-colour`` to ``parser``.

    Parameters
    ----------
    {cmd_parser}
    """
    parser.add_argument("--filters", type=int, default=32, help="code maps (default: 32)")
    parser.add_argument("--show-size", type=int, default=128,
                        help="side of the held-out crop whose code maps are drawn (default: 128)")
    runs.add_model_arguments(parser, kernel=9, lam=1.0, tile=32, n_tiles=400, n_test=100,
                             batch_size=8, lr=0.005)


def display(image: np.ndarray) -> np.ndarray:
    """A preprocessed ``(C, H, W)`` image mapped to [0, 1] ``(H, W, C)`` for display
    (zero at mid-grey, ±3 standard deviations at the ends).

    Parameters
    ----------
    image : ndarray of shape (C, H, W)
        A whitened or contrast-normalised image (or its reconstruction).

    Returns
    -------
    ndarray of shape (H, W, C)
        Values in [0, 1].
    """
    scale = 3 * float(image.std()) or 1.0
    return np.clip(0.5 + 0.5 * image.transpose(1, 2, 0) / scale, 0, 1)


def run(args: argparse.Namespace) -> Run:
    """Train on colour tiles, draw the kernels and a held-out crop's code maps, write metrics.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm conv-colour`` (:func:`add_arguments`): ``filters``,
        ``show_size``, the model flags of
        :func:`~latentebm.experiments.conv_autoencoder_runs.add_model_arguments` and the
        common ones.

    Returns
    -------
    Run
        The output folder, with ``metrics.json``, the model and the figures written.
    """
    runs.check_arguments(args)
    if args.filters < 1 or args.show_size < args.kernel:
        raise ValueError("--filters must be >= 1 and --show-size at least --kernel")
    device = resolve_device(args.device)
    run_dir = Run.from_args(args)
    photos = load_images(args.images, grey=False)
    images = runs.preprocess(photos, args.preprocess)
    # The last photograph is held out whole for the code-map figure; tiles come from the rest.
    if len(images) < 2:
        raise ValueError(f"conv-colour needs at least 2 photographs in --images (one is held "
                         f"out for the code maps), found {len(images)}")
    show_source, train_images = images[-1], images[:-1]
    train_np, test_np = runs.image_tiles(train_images, args.tile, args.n_tiles, args.n_test,
                                         args.seed)
    train = torch.from_numpy(train_np).to(device)
    test = torch.from_numpy(test_np).to(device)

    model = runs.train_or_load(args, run_dir, args.filters, 3, train, f"{args.filters:02d}")
    if not distributed.is_main():  # the model is the same on every rank: rank 0 reports
        return run_dir
    encoder = model.encoder.detach().cpu().numpy()
    decoder = model.decoder.detach().cpu().numpy()
    viz.filter_bank_pair(encoder, decoder, run_dir.path("kernels.png"),
                         title=f"{args.filters} colour kernels {args.kernel}x{args.kernel}x3")
    viz.atom_grid(decoder.transpose(0, 2, 3, 1).reshape(args.filters, -1),
                  (args.kernel, args.kernel, 3), run_dir.path("decoder_kernels.png"),
                  title="decoder kernels")

    h, w = show_source.shape[:2]
    s = min(args.show_size, h, w)
    r0, c0 = (h - s) // 2, (w - s) // 2
    crop = show_source[r0 : r0 + s, c0 : c0 + s].transpose(2, 0, 1).astype(np.float32)
    y = torch.from_numpy(crop[None].copy()).to(device)
    out = model.infer(y, tol=1e-4, max_iter=1000, beta=0.0)
    z = out.z[0]
    with torch.no_grad():
        recon = model.decode(out.z)[0].cpu().numpy()
    viz.image_grid(np.stack([display(crop), display(recon)]), run_dir.path("image_pair.png"),
                   n_cols=2, title="held-out crop (left) and its reconstruction (right)",
                   value_range=(0.0, 1.0))
    maps = z.cpu().numpy()
    bound = float(np.abs(maps).max()) or 1.0
    viz.image_grid(maps, run_dir.path("code_maps.png"), n_cols=8, value_range=(-bound, bound),
                   title=f"code maps of the crop ({float((z != 0).float().mean()):.2%} non-zero;"
                   " grey = 0)")
    similarity = runs.filter_similarity(encoder, decoder)
    metrics = {
        "n_train_tiles": int(train.shape[0]),
        "n_test_tiles": int(test.shape[0]),
        "n_photographs": len(photos),
        "crop_code_nonzero_share": float((z != 0).float().mean()),
        "crop_code_nonzero_share_per_map": [float(v) for v in (z != 0).float().mean((1, 2))],
        "crop_relative_reconstruction_error": float(((crop - recon) ** 2).sum()
                                                    / (crop**2).sum()),
        "crop_codes_converged": bool(out.converged.all()),
        **runs.evaluate(model, test),
        "encoder_decoder_similarity_mean": float(similarity.mean()),
        "history": model.history_,
        "wall_seconds": run_dir.elapsed(),
    }
    run_dir.write_metrics(metrics)
    if not args.quiet:
        print(
            f"conv-colour: {metrics['n_photographs']} photographs, {args.filters} kernels "
            f"{args.kernel}x{args.kernel}x3; encoder~decoder similarity "
            f"{metrics['encoder_decoder_similarity_mean']:.2f}, codes converged "
            f"{metrics['codes_converged_share']:.0%}, held-out relative error "
            f"{metrics['relative_reconstruction_error']:.3f}, code maps "
            f"{metrics['crop_code_nonzero_share']:.1%} non-zero\n"
            "  lecture: colour kernels become oriented edges and colour blobs; the code maps "
            "are sparse\n"
            f"  figures: {run_dir.out / 'kernels.png'}, code_maps.png, image_pair.png")
    return run_dir
