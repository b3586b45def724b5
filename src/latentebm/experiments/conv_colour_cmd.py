"""``latentebm conv-colour``: a convolutional sparse auto-encoder with 9×9×3 kernels on colour
photographs; the kernels, the code maps of a whole held-out photograph and how sparse they are.

By default it trains on Kodak24 when ``../shared/data/kodak24`` (beside the working folder or
the source checkout) holds it, else on scikit-image's bundled colour photographs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from .. import viz
from .._validation import resolve_device
from ..data import load_images
from ..training import distributed
from ..viz._figure import new_figure, save_png
from . import conv_autoencoder_runs as runs
from ._args import command_arguments, count_argument, default_photographs
from ._run import Run

NAME = "conv-colour"
HELP = "convolutional sparse auto-encoder on colour photographs: 9x9x3 kernels, sparse code maps"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filters", type=count_argument, default=32,
                        help="code maps (default: 32)")
    parser.add_argument("--show-size", type=count_argument, default=256,
                        help="the held-out photograph (the last one) is shown whole, "
                        "block-averaged until its longer side is at most this (default: 256)")
    runs.add_model_arguments(parser, kernel=9, lam=1.0, tile=32, n_tiles=400, n_test=100,
                             batch_size=8, lr=0.005, taper=0,
                             images_help="folder of colour photographs; the last one is held "
                             "out whole for the code maps (default: Kodak24 from "
                             "../shared/data/kodak24 when present, else scikit-image's bundled "
                             "colour photographs)")


add_arguments = command_arguments(NAME, _add_flags)


def downscale(photo: np.ndarray, longest: int) -> np.ndarray:
    """Block-average ``photo`` by the smallest integer factor that brings its longer side to
    at most ``longest`` (trailing rows/columns that do not fill a block are dropped).

    Parameters
    ----------
    photo : ndarray of shape (H, W, C)
        The photograph.
    longest : int
        Largest side wanted.

    Returns
    -------
    ndarray of shape (H // f, W // f, C)
        ``f = ceil(max(H, W) / longest)``; ``photo`` itself when ``f = 1``.
    """
    h, w = photo.shape[:2]
    f = math.ceil(max(h, w) / longest)
    if f <= 1:
        return photo
    h2, w2 = h // f, w // f
    blocks = photo[: h2 * f, : w2 * f].reshape(h2, f, w2, f, -1)
    return blocks.mean(axis=(1, 3))


def code_map_figure(photo: np.ndarray, maps: np.ndarray, kernels: np.ndarray,
                    path: Path, title: str) -> Path:
    """The photograph, then each code map beside its decoder kernel (grey = 0).

    Parameters
    ----------
    photo : ndarray of shape (H, W, 3)
        The photograph for display, values in [0, 1].
    maps : ndarray of shape (n_maps, H', W')
        Code maps (one colour scale for all, symmetric about 0, saturating at the upper
        quartile of the non-zero codes' magnitudes).
    kernels : ndarray of shape (n_maps, 3, k, k)
        Decoder kernels, drawn in each map's corner.
    path : pathlib.Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    n = len(maps)
    cols = min(6, n + 1)
    rows = math.ceil((n + 1) / cols)
    fig = new_figure(3.2 * cols, 3.2 * rows + 0.5)
    fig.suptitle(title, fontsize=10)
    ax = fig.add_subplot(rows, cols, 1)
    ax.imshow(photo, interpolation="nearest")
    ax.set_title("photograph", fontsize=8)
    ax.set_axis_off()
    # the strongest codes saturate, so that the typical non-zero code is visible, not a faint dot
    active = np.abs(maps[maps != 0])
    bound = float(np.quantile(active, 0.75)) if active.size else 1.0
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 2)
        ax.imshow(maps[i], cmap="gray", vmin=-bound, vmax=bound, interpolation="nearest")
        ax.set_title(f"map {i}: {float((maps[i] != 0).mean()):.1%} non-zero", fontsize=7)
        ax.set_axis_off()
        inset = ax.inset_axes((0.0, 0.72, 0.28, 0.28))
        kern = kernels[i].transpose(1, 2, 0)
        m = float(np.abs(kern).max()) or 1.0
        inset.imshow(0.5 + 0.5 * kern / m, interpolation="nearest")
        inset.set_xticks([])
        inset.set_yticks([])
        for spine in inset.spines.values():
            spine.set_edgecolor("red")
    save_png(fig, path)
    return path


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


@runs.run_doc_filler("conv-colour", "``filters``, ``show_size``", "the model")
def run(args: argparse.Namespace) -> Run:
    """Train on colour tiles, draw the kernels and the code maps of the whole held-out
    photograph, write metrics.

    Parameters
    ----------
    {args_and_returns}
    """
    runs.check_arguments(args)
    if args.show_size < args.kernel:
        raise ValueError(f"--show-size must be at least --kernel ({args.kernel}), "
                         f"got {args.show_size}")
    device = resolve_device(args.device)
    folder = args.images if args.images is not None else default_photographs()
    # the folder found, not the flag: the default depends on where the command runs
    run_dir = Run.from_args(args, images=None if folder is None else str(folder))
    photos, names = load_images(folder, grey=False, return_names=True)
    # The last photograph is held out whole for the code-map figure; tiles come from the rest.
    if len(photos) < 2:
        raise ValueError(f"conv-colour needs at least 2 photographs in --images (one is held "
                         f"out for the code maps), found {len(photos)}")
    train_images = runs.preprocess(photos[:-1], args.preprocess, names[:-1])
    show_source = runs.preprocess([downscale(photos[-1], args.show_size)], args.preprocess,
                                  names[-1:])[0]
    train_np, test_np = runs.image_tiles(train_images, args.tile, args.n_tiles, args.n_test,
                                         args.seed, taper=args.taper)
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

    crop = show_source.transpose(2, 0, 1).astype(np.float32)  # the whole photograph
    y = torch.from_numpy(crop[None].copy()).to(device)
    out = model.infer(y, tol=runs.EVAL_TOL, max_iter=args.eval_iter, beta=0.0)
    z = out.z[0]
    with torch.no_grad():
        recon = model.decode(out.z)[0].cpu().numpy()
    viz.image_grid(np.stack([display(crop), display(recon)]), run_dir.path("image_pair.png"),
                   n_cols=2, title="held-out photograph (left) and its reconstruction (right)",
                   value_range=(0.0, 1.0))
    maps = z.cpu().numpy()
    k = args.kernel
    inside = maps[:, k // 2 : k // 2 + crop.shape[1], k // 2 : k // 2 + crop.shape[2]]
    shown = np.clip(downscale(photos[-1], args.show_size), 0, 1)
    code_map_figure(shown, inside if model.boundary == "full" else maps, decoder,
                    run_dir.path("code_maps.png"),
                    f"code maps of the whole held-out photograph "
                    f"({float((z != 0).float().mean()):.2%} non-zero; grey = 0, black/white from "
                    f"the upper quartile of |code| on; each map's decoder kernel in its corner)")
    similarity = runs.filter_similarity(encoder, decoder)
    metrics = {
        "n_train_tiles": int(train.shape[0]),
        "n_test_tiles": int(test.shape[0]),
        "photographs": str(folder) if folder is not None else "scikit-image",
        "n_photographs": len(photos),
        "shown_photograph_shape": list(crop.shape),
        "crop_code_nonzero_share": float((z != 0).float().mean()),
        "crop_code_nonzero_share_per_map": [float(v) for v in (z != 0).float().mean((1, 2))],
        "crop_relative_reconstruction_error": float(((crop - recon) ** 2).sum()
                                                    / (crop**2).sum()),
        "crop_codes_converged": bool(out.converged.all()),
        "crop_relative_gap": float(out.gap[0] / out.energy[0]),
        **runs.evaluate(model, test, args.eval_iter),
        "encoder_decoder_similarity_mean": float(similarity.mean()),
        "history": model.history_,
        "wall_seconds": run_dir.elapsed(),
    }
    run_dir.write_metrics(metrics)
    print(
        f"conv-colour: {metrics['n_photographs']} photographs, {args.filters} kernels "
        f"{args.kernel}x{args.kernel}x3; encoder~decoder similarity "
        f"{metrics['encoder_decoder_similarity_mean']:.2f}, codes converged "
        f"{metrics['codes_converged_share']:.0%}, held-out relative error "
        f"{metrics['relative_reconstruction_error']:.3f}, code maps "
        f"{metrics['crop_code_nonzero_share']:.1%} non-zero (whole held-out photograph "
        f"{crop.shape[2]}x{crop.shape[1]}, codes "
        f"{'certified' if metrics['crop_codes_converged'] else 'NOT certified'} to a "
        f"relative gap of {runs.EVAL_TOL:g})\n"
        "  lecture (fig. 7): 9x9 colour decoding kernels, and code maps that are very "
        "sparse, a few white or black points on grey\n"
        f"  figures: {run_dir.out / 'kernels.png'}, code_maps.png, image_pair.png")
    return run_dir
