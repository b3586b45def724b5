"""``latentebm conv-filters``: convolutional sparse auto-encoders with 1, 2, 4, ... 64 filters on
whitened (or contrast-normalised) grey photographs, the lecture's filter-bank figure.

Expected from the lecture (Kavukcuoglu et al. 2010): one filter becomes centre-surround, four
become oriented edges, more filters tile orientations and add gratings and centre-surround
blobs, and encoder and decoder filters look alike.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from .. import viz
from .._validation import resolve_device
from ..data import load_images
from ..metrics import (
    centre_surround_score,
    fit_gabors,
    gabor_summary,
    is_oriented,
    orientation_coverage,
)
from ..training import distributed
from ..viz._figure import new_figure, save_png
from . import conv_autoencoder_runs as runs
from ._args import command_arguments, count_argument
from ._run import Run

NAME = "conv-filters"
HELP = ("convolutional sparse auto-encoders with 1..64 filters on natural images: "
        "centre-surround, oriented edges, gratings")


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--counts", type=count_argument, nargs="+",
                        default=[1, 2, 4, 8, 16, 32, 64],
                        help="filter counts, one model each (default: 1 2 4 8 16 32 64)")
    runs.add_model_arguments(parser, kernel=9, lam=0.5, tile=32, n_tiles=800, n_test=100,
                             batch_size=8, lr=0.005, epochs=3)


add_arguments = command_arguments(NAME, _add_flags)


def shape_metrics(encoder: np.ndarray, decoder: np.ndarray) -> dict[str, object]:
    """Centre-surround scores, Gabor fits and encoder/decoder similarity of grey filters.

    Parameters
    ----------
    encoder : ndarray of shape (n_filters, 1, k, k)
        Encoder filters.
    decoder : ndarray of shape (n_filters, 1, k, k)
        Decoder filters (channel 0 is the one measured).

    Returns
    -------
    dict
        ``centre_surround_scores``, ``max_centre_surround_score``, ``oriented_share`` (Gabor
        R² >= 0.8 and not a blob: :func:`~latentebm.metrics.is_oriented`),
        ``orientation_spread`` (of those), ``orientation_coverage`` (share of eight 22.5°
        orientation bins holding an oriented filter), ``orientations_deg``, ``gabor_median_r2``,
        ``encoder_decoder_similarity_mean`` and ``encoder_decoder_similarity``.
    """
    k = decoder.shape[-1]
    grey = decoder[:, 0]
    fits = fit_gabors(grey.reshape(len(grey), -1), (k, k))
    summary = gabor_summary(fits)
    scores = [centre_surround_score(f) for f in grey]
    similarity = runs.filter_similarity(encoder, decoder)
    oriented = [is_oriented(f) for f in fits]
    return {
        "centre_surround_scores": [float(s) for s in scores],
        "max_centre_surround_score": float(max(scores)),
        "oriented_share": float(np.mean(oriented)),
        "orientation_spread": summary["orientation_spread"],
        "orientation_coverage": orientation_coverage(
            [f.theta for f, ok in zip(fits, oriented, strict=True) if ok]),
        "orientations_deg": [float(np.degrees(f.theta))
                             for f, ok in zip(fits, oriented, strict=True) if ok],
        "gabor_median_r2": summary["median_r2"],
        "encoder_decoder_similarity_mean": float(similarity.mean()),
        "encoder_decoder_similarity": [float(s) for s in similarity],
    }


def oriented_share(filters: np.ndarray) -> float:
    """The share of grey filters that are oriented edges (:func:`~latentebm.metrics.is_oriented`).

    Parameters
    ----------
    filters : ndarray of shape (n_filters, 1, k, k)
        Filters (channel 0 is the one measured).

    Returns
    -------
    float
        In [0, 1].
    """
    k = filters.shape[-1]
    fits = fit_gabors(filters[:, 0].reshape(len(filters), -1), (k, k))
    return float(np.mean([is_oriented(f) for f in fits]))


def overview_figure(banks: dict[int, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """One row per filter count: encoder filters above, decoder filters below.

    Parameters
    ----------
    banks : dict of int to (ndarray, ndarray)
        Per filter count, the encoder and decoder filters, each of shape
        ``(count, C, k, k)``.
    path : pathlib.Path
        PNG file to write.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    rows = len(banks)
    width = max(len(d) for _, d in banks.values())
    cols = min(width, 32)
    lines = sum(2 * math.ceil(len(d) / cols) for _, d in banks.values())
    fig = new_figure(0.45 * cols + 1.5, 0.45 * lines + 0.35 * rows + 0.5)
    grid = fig.add_gridspec(lines, cols + 1, hspace=0.15, wspace=0.08)
    line = 0
    for count, (enc, dec) in banks.items():
        n_lines = math.ceil(len(dec) / cols)
        for half, bank in (("enc", enc), ("dec", dec)):
            label_ax = fig.add_subplot(grid[line, 0])
            label_ax.set_axis_off()
            label_ax.text(1.0, 0.5, f"{count}: {half}", ha="right", va="center", fontsize=8)
            for i, filt in enumerate(bank):
                r, c = divmod(i, cols)
                ax = fig.add_subplot(grid[line + r, c + 1])
                img = filt.transpose(1, 2, 0)
                m = np.abs(img).max()
                img = 0.5 + 0.5 * img / (m if m > 0 else 1.0)
                ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0,
                          vmax=1, interpolation="nearest")
                ax.set_axis_off()
            line += n_lines
    save_png(fig, path)
    return path


@runs.run_doc_filler("conv-filters", "``counts``", "the models")
def run(args: argparse.Namespace) -> Run:
    """Train one model per filter count on grey tiles, draw the filters, write metrics.

    Parameters
    ----------
    {args_and_returns}
    """
    runs.check_arguments(args)
    counts = sorted(set(args.counts))
    device = resolve_device(args.device)
    run_dir = Run.from_args(args, counts=counts)
    photos, names = load_images(args.images, grey=True, return_names=True)
    images = runs.preprocess(photos, args.preprocess, names)
    train_np, test_np = runs.image_tiles(images, args.tile, args.n_tiles, args.n_test, args.seed,
                                         taper=args.taper)
    train = torch.from_numpy(train_np).to(device)
    test = torch.from_numpy(test_np).to(device)

    per_count: dict[str, dict] = {}
    banks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    trained: dict[int, tuple] = {}  # count: (model, seconds to train or load it)
    for count in counts:  # under torchrun every rank trains, then rank 0 reports
        start = run_dir.elapsed()
        trained[count] = (runs.train_or_load(args, run_dir, count, 1, train, f"{count:02d}"),
                          run_dir.elapsed() - start)
    if not distributed.is_main():  # the models are the same on every rank
        return run_dir
    for count, (model, train_wall) in trained.items():
        start = run_dir.elapsed()
        encoder = model.encoder.detach().cpu().numpy()
        decoder = model.decoder.detach().cpu().numpy()
        banks[count] = (encoder, decoder)
        viz.filter_bank_pair(encoder, decoder, run_dir.path(f"filters_{count:02d}.png"),
                             title=f"{count} filter{'s' * (count > 1)}, {args.kernel}x"
                             f"{args.kernel}, {args.mode}")
        initial = runs.make_model(args, count, 1, device).initial_decoder(train)
        per_count[str(count)] = {
            **shape_metrics(encoder, decoder),
            "initial_oriented_share": oriented_share(initial.cpu().numpy()),
            **runs.evaluate(model, test, args.eval_iter),
            "train_seconds": sum(epoch["seconds"] for epoch in model.history_),
            "seconds_this_invocation": train_wall + run_dir.elapsed() - start,
            "history": model.history_,
        }
    overview_figure(banks, run_dir.path("filters_overview.png"))
    metrics = {
        "counts": counts,
        "n_train_tiles": int(train.shape[0]),
        "n_test_tiles": int(test.shape[0]),
        "single_filter_centre_surround_score": (
            per_count["1"]["centre_surround_scores"][0] if "1" in per_count else None),
        "per_count": per_count,
        "wall_seconds": run_dir.elapsed(),
    }
    run_dir.write_metrics(metrics)
    print(result_text(metrics, run_dir.out))
    return run_dir


def result_text(metrics: dict[str, object], out: Path) -> str:
    """What the run found, one line per filter count, beside the lecture's claim.

    Parameters
    ----------
    metrics : dict
        The run's ``metrics.json`` content.
    out : pathlib.Path
        The run folder (where the figures are).

    Returns
    -------
    str
    """
    lines = ["conv-filters: filters | centre-surround (max) | oriented share (untrained) | "
             "orientation coverage (8 bins) | encoder~decoder | codes converged | "
             "held-out rel. error"]
    for count, m in metrics["per_count"].items():
        lines.append(
            f"  {int(count):3d} | {m['max_centre_surround_score']:.2f} | "
            f"{m['oriented_share']:.0%} ({m.get('initial_oriented_share', float('nan')):.0%}) | "
            f"{m.get('orientation_coverage', float('nan')):.2f} | "
            f"{m['encoder_decoder_similarity_mean']:.2f} | {m['codes_converged_share']:.0%} | "
            f"{m['relative_reconstruction_error']:.3f}")
    lines.append("  lecture (fig. 6): 1 filter is centre-surround, 2 'weird shapes', 4 oriented "
                 "edges (horizontal and vertical, two polarities), 8 edges at 8 orientations, "
                 "16 and more add orientations, centre-surround and gratings; encoder and "
                 "decoder filters look very similar")
    lines.append(f"  codes certified to a relative duality gap of {runs.EVAL_TOL:g} on the "
                 "held-out tiles; orientation coverage: share of eight 22.5-degree bins holding "
                 "an oriented (Gabor R2 >= 0.8) decoder filter; untrained: the image windows "
                 "the filters start from")
    lines.append(f"  figures: {Path(out) / 'filters_overview.png'}, filters_NN.png")
    return "\n".join(lines)
