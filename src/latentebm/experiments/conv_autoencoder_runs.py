"""What the two convolutional auto-encoder commands share (conv-filters, conv-colour): model
arguments, the documentation of ``run``, image preprocessing and tiling, training with a
resumable checkpoint, evaluation."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from .._docs import doc_filler, fill_doc
from ..data import local_contrast_normalize, whiten_1f
from ..data.images import each_image
from ..models.conv_autoencoder import ConvSparseAutoencoder
from ..training import distributed
from ._args import (
    UNUSED_DATA_DIR,
    add_common_arguments,
    add_defaulted_flags,
    count_argument,
    non_negative_argument,
    non_negative_int_argument,
    positive_argument,
)
from ._run import Run

T = TypeVar("T")

WHITEN_CUTOFF = 0.2
"""Cut-off of the auto-encoders' 1/f whitening in cycles per pixel: half of Olshausen &
Field's 0.4 (which ``sparse-coding --dataset natural`` uses). The lecture's auto-encoders
(Kavukcuoglu et al. 2010) trained on contrast-normalised images, so the cut-off is this
pipeline's own choice; its defaults (``--beta``, ``--taper``, the thresholds' fit) were
measured with it."""


@fill_doc
def add_model_arguments(parser: argparse.ArgumentParser, *, kernel: int, lam: float,
                        tile: int, n_tiles: int, n_test: int, batch_size: int,
                        lr: float, epochs: int = 6, taper: int | None = None,
                        images_help: str = "folder of photographs (default: scikit-image's "
                        "bundled ones)") -> None:
    """Flags shared by ``conv-filters`` and ``conv-colour``, with the common flags.

    Parameters
    ----------
    {cmd_parser}
    kernel, lam, tile, n_tiles, n_test, batch_size, lr : int or float
        Defaults of ``--kernel``, ``--lam``, ``--tile``, ``--n-tiles``, ``--n-test``,
        ``--batch-size`` and ``--lr``.
    epochs : int, default=6
        Default of ``--epochs``.
    taper : int or None, default=None
        Default of ``--taper`` (``None``: the kernel side minus one).
    images_help : str
        Help text of ``--images`` (it names the default photographs).
    """
    parser.add_argument("--images", default=None, help=images_help)
    parser.add_argument("--preprocess", choices=["whiten", "lcn"], default="whiten",
                        help="1/f whitening (Olshausen & Field's filter, cut at 0.2 "
                        "cycles/pixel) or local contrast normalisation (default: whiten)")
    add_defaulted_flags(parser, count_argument, [
        ("--kernel", kernel, "kernel side of encoder and decoder"),
        ("--tile", tile, "training images are tiles of this side"),
        ("--n-tiles", n_tiles, "training tiles"),
        ("--n-test", n_test, "held-out tiles"),
        ("--batch-size", batch_size, "tiles per Adam step"),
    ])
    add_defaulted_flags(parser, positive_argument,
                        [("--lr", lr, "Adam step, decayed to 0 on a cosine")])
    parser.add_argument("--mode", choices=["psd", "sparse-ae"], default="psd",
                        help="PSD (FISTA codes warm-started by the encoder) or plain sparse "
                        "auto-encoder (default: psd)")
    parser.add_argument("--nonlinearity", choices=["tanh", "shrink"], default="shrink",
                        help="encoder output: a learned soft threshold (exact zeros, like the "
                        "codes) or tanh, each with a per-map gain (default: shrink)")
    parser.add_argument("--beta", type=non_negative_argument, default=3.0,
                        help="weight of the prediction term (β/2)‖z − Enc(y)‖² in the training "
                        "energy: the codes the decoder learns from are pulled toward what the "
                        "encoder can predict, so the two halves learn alike filters, at a few "
                        "per cent more reconstruction error (README) (default: 3)")
    parser.add_argument("--fista-iter", type=count_argument, default=30,
                        help="FISTA iterations per training batch, warm-started from the "
                        "encoder (default: 30)")
    parser.add_argument("--taper", type=non_negative_int_argument, default=taper,
                        help="pixels of each tile's border tapered to zero by a raised cosine, "
                        "so the tile's cut edges teach the filters no broadband steps "
                        f"(default: {'kernel - 1' if taper is None else taper}; 0: none)")
    parser.add_argument("--eval-iter", type=count_argument, default=1000,
                        help="iteration cap of the held-out codes and the code maps, certified "
                        "to a relative duality gap of 1e-3 (default: 1000)")
    parser.add_argument("--threads", type=count_argument, default=None,
                        help="torch CPU threads (default: torch's choice)")
    add_common_arguments(parser, epochs=epochs, lam=lam, data_dir_help=UNUSED_DATA_DIR)


def run_doc_filler(command: str, flags: str, written: str) -> Callable[[T], T]:
    """A docstring filler that also knows ``{args_and_returns}``: the ``args`` entry and the
    ``Returns`` section of a convolutional command's ``run``.

    Parameters
    ----------
    command : str
        The subcommand, e.g. ``"conv-filters"``.
    flags : str
        The command's own flags that ``run`` reads, as they appear in the text (the
        flag names in double backquotes, comma-separated).
    written : str
        What the output folder holds besides ``metrics.json`` and the figures (``"the model"``).

    Returns
    -------
    callable
        The decorator.
    """
    return doc_filler({"args_and_returns": (
        "args : argparse.Namespace\n"
        f"    The parsed flags of ``latentebm {command}`` (:func:`add_arguments`):\n"
        f"    {flags}, the model flags of\n"
        "    :func:`~latentebm.experiments.conv_autoencoder_runs.add_model_arguments` and the\n"
        "    common ones.\n\n"
        "Returns\n-------\nRun\n"
        f"    The output folder, with ``metrics.json``, {written} and the figures written.")})


def preprocess(images: Sequence[np.ndarray], how: str,
               names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Whiten or contrast-normalise every photograph (grey ``(H, W)`` or colour ``(H, W, 3)``).

    Parameters
    ----------
    images : sequence of ndarray of shape (H, W) or (H, W, 3)
        The photographs.
    how : {"whiten", "lcn"}
        :func:`~latentebm.data.whiten_1f` at :data:`WHITEN_CUTOFF`, or
        :func:`~latentebm.data.local_contrast_normalize` (any value other than ``"whiten"``
        means the latter).
    names : sequence of str or None
        Where each photograph came from, named in the error about one of them.

    Returns
    -------
    list of ndarray of shape (H, W) or (H, W, 3)
        float64 images, each the shape of its input.
    """
    if how == "whiten":
        return each_image(partial(whiten_1f, f0_ratio=WHITEN_CUTOFF), images, names)
    return each_image(local_contrast_normalize, images, names)


def tile_window(size: int, taper: int) -> np.ndarray:
    """A ``size × size`` window, 1 inside and a raised cosine over the ``taper`` pixels of each
    border.

    Parameters
    ----------
    size : int
        Tile side.
    taper : int
        Width of the tapered border, ``0 <= taper <= size // 2`` (0: all ones).

    Returns
    -------
    ndarray of shape (size, size)
        float32 window, the outer product of two 1-D ones.
    """
    w = np.ones(size)
    if taper > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(taper) + 0.5) / taper)
        w[:taper] = ramp
        w[size - taper :] = ramp[::-1]
    return np.outer(w, w).astype(np.float32)


def image_tiles(images: Sequence[np.ndarray], size: int, n_train: int, n_test: int,
                seed: int, *, taper: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``size × size`` tiles of the images, shuffled with ``seed`` and split.

    With ``taper > 0`` every tile is multiplied by :func:`tile_window`: a tile's cut edge is a
    step down to the zero padding of a ``"full"`` convolution, broadband where the whitened
    photograph has no power above about a quarter cycle per pixel, and the encoder, which has
    to predict codes there, learned high-frequency noise from those steps.

    Parameters
    ----------
    images : sequence of ndarray of shape (H, W) or (H, W, C)
        The (preprocessed) photographs, all with the same channel count.
    size : int
        Tile side in pixels.
    n_train, n_test : int
        Number of training and held-out tiles; together at most the number of tiles.
    seed : int
        Seed of the shuffle.
    taper : int, default=0
        Width of the tapered border of every tile (0: none).

    Returns
    -------
    train : ndarray of shape (n_train, C, size, size)
        float32 training tiles (``C = 1`` for grey).
    test : ndarray of shape (n_test, C, size, size)
        float32 held-out tiles.
    """
    tiles = []
    for im in images:
        arr = im[..., None] if im.ndim == 2 else im
        h, w = arr.shape[:2]
        for r in range(0, h - size + 1, size):
            for c in range(0, w - size + 1, size):
                tiles.append(arr[r : r + size, c : c + size].transpose(2, 0, 1))
    if len(tiles) < n_train + n_test:
        raise ValueError(
            f"the images give only {len(tiles)} tiles of {size}x{size}; ask for fewer than "
            f"--n-tiles {n_train} + --n-test {n_test}, use smaller tiles or more images"
        )
    order = np.random.default_rng(seed).permutation(len(tiles))
    stack = np.stack([tiles[i] for i in order[: n_train + n_test]]).astype(np.float32)
    if taper > 0:
        stack *= tile_window(size, taper)
    return stack[:n_train], stack[n_train:]


def load_finished(path: Path, steps: int, epochs: int,
                  device: torch.device) -> ConvSparseAutoencoder:
    """The finished auto-encoder a resumed run saved at ``path``, if it ran the ``steps`` that
    ``--epochs`` now asks for (else it stands for another run: a ``ValueError``).

    Parameters
    ----------
    path : pathlib.Path
        The model saved at the end of its training.
    steps : int
        Training steps of ``epochs`` epochs.
    epochs : int
        ``--epochs``, for the message.
    device : torch.device
        Where to load it.

    Returns
    -------
    ConvSparseAutoencoder
    """
    model = ConvSparseAutoencoder.load(path, device=device)
    if model.n_steps_ != steps:  # the learning rate's schedule depends on the epochs
        raise ValueError(
            f"--resume: {path.name} finished {model.n_steps_} steps, but --epochs {epochs} "
            f"asks for {steps}; the learning rate's schedule depends on the epochs, so train "
            "again in another --out (or without --resume)")
    return model


def check_arguments(args: argparse.Namespace) -> None:
    """Reject out-of-range model flags and apply ``--threads``.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``kernel``, ``tile``, ``n_tiles``, ``n_test``,
        ``batch_size``, ``fista_iter``, ``eval_iter``, ``epochs``, ``taper`` (``None`` is
        replaced by ``min(kernel - 1, tile // 2)``) and ``threads`` (``torch.set_num_threads``
        is called when it is given).
    """
    if args.kernel > args.tile:
        raise ValueError(f"--kernel {args.kernel} is larger than --tile {args.tile}")
    if args.kernel < 3:  # checked before training, not by the measures after it
        raise ValueError(f"--kernel must be at least 3: the filters are measured by Gabor and "
                         f"centre-surround fits, which need 3x3, got {args.kernel}")
    if args.taper is None:
        args.taper = min(args.kernel - 1, args.tile // 2)
    if not 0 <= args.taper <= args.tile // 2:
        raise ValueError(f"--taper must be in [0, --tile / 2 = {args.tile // 2}], "
                         f"got {args.taper}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def make_model(args: argparse.Namespace, n_filters: int, channels: int,
               device: torch.device) -> ConvSparseAutoencoder:
    """An untrained auto-encoder configured from the flags.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``kernel``, ``lam``, ``mode``, ``nonlinearity``,
        ``beta`` and ``seed``.
    n_filters : int
        Number of feature maps.
    channels : int
        Image channels (1 grey, 3 colour).
    device : torch.device
        Where the model lives.

    Returns
    -------
    ConvSparseAutoencoder
        Filters of shape ``(n_filters, channels, kernel, kernel)``.
    """
    return ConvSparseAutoencoder(n_filters, args.kernel, channels, lam=args.lam, mode=args.mode,
                                 nonlinearity=args.nonlinearity, beta=args.beta,
                                 seed=args.seed, device=device)


def train_or_load(args: argparse.Namespace, run_dir: Run, n_filters: int, channels: int,
                  train: torch.Tensor, tag: str) -> ConvSparseAutoencoder:
    """Train one model (resuming from its checkpoint), or load it when a finished model from
    the same configuration is in the run folder and ``--resume`` was given.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``resume``, ``epochs``, ``batch_size``, ``lr``,
        ``fista_iter``, ``quiet`` and those of :func:`make_model`.
    run_dir : Run
        The run folder (``model_{tag}`` and ``checkpoint_{tag}`` live there).
    n_filters : int
        Number of feature maps.
    channels : int
        Image channels.
    train : torch.Tensor of shape (n, channels, size, size)
        Training tiles (their device is the model's).
    tag : str
        Name of this model within the run.

    Returns
    -------
    ConvSparseAutoencoder
        The trained (or loaded) model, saved as ``model_{tag}.safetensors`` (by rank 0 alone
        under ``torchrun``; every rank trains it).
    """
    final = run_dir.out / f"model_{tag}.safetensors"
    if args.resume and final.exists():
        return load_finished(final, args.epochs * math.ceil(train.shape[0] / args.batch_size),
                             args.epochs, train.device)
    model = make_model(args, n_filters, channels, train.device)
    model.fit(train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              lr_schedule="cosine", max_iter=args.fista_iter,
              checkpoint=run_dir.path(f"checkpoint_{tag}.safetensors"),
              resume=args.resume, progress=not args.quiet)
    distributed.on_main(model.save)(run_dir.path(f"model_{tag}.safetensors"))
    return model


EVAL_TOL = 1e-3
"""Relative duality gap to which held-out codes and code maps are certified."""


def evaluate(model: ConvSparseAutoencoder, test: torch.Tensor,
             max_iter: int = 1000) -> dict[str, float]:
    """Held-out reconstruction and sparsity, with optimal (FISTA) codes and encoder codes.

    Parameters
    ----------
    model : ConvSparseAutoencoder
        The trained model.
    test : torch.Tensor of shape (n, C, H, W)
        Held-out tiles.
    max_iter : int, default=1000
        Iteration cap of the codes, certified to a relative duality gap of :data:`EVAL_TOL`.

    Returns
    -------
    dict of str to float
        ``test_mean_energy``, ``relative_reconstruction_error``, ``code_nonzero_share``,
        ``codes_converged_share``, ``encoder_relative_reconstruction_error`` and
        ``encoder_relative_prediction_error``.
    """
    out = model.infer(test, tol=EVAL_TOL, max_iter=max_iter, beta=0.0)
    z = out.z
    with torch.no_grad():
        energy_y = test.pow(2).sum()
        rel = float((test - model.decode(z)).pow(2).sum() / energy_y)
        pred = model.predict(test)
        rel_enc = float((test - model.decode(pred)).pow(2).sum() / energy_y)
        prediction = float((pred - z).pow(2).sum() / z.pow(2).sum().clamp_min(1e-30))
    return {
        "test_mean_energy": float(out.energy.mean()),
        "relative_reconstruction_error": rel,
        "code_nonzero_share": float((z != 0).float().mean()),
        "codes_converged_share": float(out.converged.float().mean()),
        "encoder_relative_reconstruction_error": rel_enc,
        "encoder_relative_prediction_error": prediction,
    }


def filter_similarity(encoder: np.ndarray, decoder: np.ndarray) -> np.ndarray:
    """``|cos|`` between each encoder filter and the decoder filter of the same map.

    Parameters
    ----------
    encoder : ndarray of shape (n_filters, C, k, k)
        Encoder filters.
    decoder : ndarray of shape (n_filters, C, k, k)
        Decoder filters.

    Returns
    -------
    ndarray of shape (n_filters,)
        Absolute cosine similarities (0 where a filter is zero).
    """
    e = encoder.reshape(len(encoder), -1)
    d = decoder.reshape(len(decoder), -1)
    num = np.abs((e * d).sum(1))
    den = np.linalg.norm(e, axis=1) * np.linalg.norm(d, axis=1)
    return num / np.where(den > 0, den, 1.0)

