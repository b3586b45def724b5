"""``latentebm sparse-coding``: the lecture's dictionaries, pen strokes on MNIST and Gabor-like
edges on whitened natural-image patches."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .. import viz
from .._validation import resolve_device
from ..data import load_mnist, mnist_vectors, natural_patches
from ..data.images import OLSHAUSEN_FIELD_CUTOFF
from ..data.streaming import INDEX_NAME, ShardedArray
from ..metrics import (
    fit_gabors,
    gabor_summary,
    is_oriented,
    localization_summary,
    stroke_summary,
)
from ..models import SparseCoding
from ..training import distributed
from ._args import (
    add_common_arguments,
    add_defaulted_flags,
    command_arguments,
    count_argument,
    non_negative_argument,
)
from ._run import Run

NAME = "sparse-coding"
HELP = "learn a sparse-coding dictionary on MNIST (strokes) or natural image patches (edges)"
DEFAULT_LAM = {"mnist": 0.1, "natural": 1.0}
DEFAULT_CODES = {"mnist": "nonneg", "natural": "signed"}
#: Non-negative atoms on MNIST (sparse NMF: parts, i.e. strokes); signed edges on photographs.
DEFAULT_ATOMS_SIGN = {"mnist": "nonneg", "natural": "signed"}
#: The lecture's claim for each dataset, printed beside the measured numbers.
CLAIM = {
    "mnist": "the system learns a set of 256 strokes",
    "natural": "atoms are Gabor-like oriented edges (median Gabor-fit R² ≥ 0.9, at least 80 % "
               "of the atoms oriented)",
}
#: A stricter ink level for the stroke share: faint whole-digit context behind a stroke counts.
STRICT_STROKE_LEVEL = 0.2


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["mnist", "natural"], default="mnist",
                        help="MNIST digits (atoms become strokes) or whitened natural-image "
                        "patches (atoms become Gabor-like edges) (default: mnist)")
    add_defaulted_flags(parser, count_argument, [
        ("--atoms", 256, "dictionary size"), ("--patch", 12, "natural: patch side")])
    parser.add_argument("--images", default=None,
                        help="natural: folder of photographs (default: scikit-image's bundled)")
    parser.add_argument("--shards", default=None,
                        help="natural: train on a prepared patch dataset (latentebm "
                        "prepare-patches), streamed batch by batch, instead of patches held in "
                        "memory; held-out patches are cut afresh from --images")
    parser.add_argument("--n-train", type=count_argument, default=None,
                        help="training samples (default: all MNIST / 100000 patches)")
    add_defaulted_flags(parser, count_argument, [
        ("--n-test", 2000, "held-out samples"),
        ("--batch-size", 256, "signals per dictionary update")])
    parser.add_argument("--method", choices=["online", "sgd"], default="online",
                        help="dictionary update: Mairal et al.'s online block-coordinate "
                        "update, or projected SGD (default: online)")
    parser.add_argument("--codes", choices=["signed", "nonneg"], default=None,
                        help="code sign constraint (default: nonneg for mnist, signed for "
                        "natural; non-negative codes give the cleanest pen strokes)")
    parser.add_argument("--atoms-sign", choices=["signed", "nonneg"], default=None,
                        help="nonneg keeps the atoms non-negative as well (with nonneg codes: "
                        "sparse NMF, whose atoms are parts, i.e. pen strokes) (default: nonneg "
                        "for mnist, signed for natural)")
    parser.add_argument("--init", choices=["random", "data"], default="random",
                        help="initial atoms: Gaussian noise, or training samples (default: random;"
                        " on few MNIST digits and epochs, data-initialised atoms break into "
                        "strokes sooner)")
    parser.add_argument("--sample", action="store_true",
                        help="mnist: use the small MNIST sample bundled with the package")
    add_common_arguments(parser, epochs=5, lam=None)
    parser.add_argument("--lam", type=non_negative_argument, default=None,
                        help="λ of ½‖y − Wz‖² + λ‖z‖₁ (default: 0.1 for mnist, 1.0 for natural; on "
                        "mnist a larger λ keeps more whole digits)")


add_arguments = command_arguments(NAME, _add_flags)


def shard_patch_side(data: ShardedArray, default: int) -> int:
    """The patch side that prepared shards record in their index (``default`` where they
    record none), or a ``ValueError`` naming the index when the value is not a side.

    Parameters
    ----------
    data : ShardedArray
        The prepared patches.
    default : int
        ``--patch``.

    Returns
    -------
    int
    """
    size = data.meta.get("size", default)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{data.path / INDEX_NAME}: meta.size must be a positive integer (the "
                         f"patch side), got {size!r}")
    return size


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Training and held-out rows ``(n, n_features)`` and the image shape of one row.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``dataset``, ``sample``, ``data_dir``, ``n_train``,
        ``n_test``, ``patch``, ``images`` and ``seed``.

    Returns
    -------
    train : ndarray of shape (n_train, n_features), or ShardedArray with --shards
        float32 training rows (784 features for MNIST, ``patch ** 2`` for patches).
    test : ndarray of shape (n_test, n_features)
        float32 held-out rows.
    image_shape : tuple of int
        ``(28, 28)`` or ``(patch, patch)``.
    """
    if args.sample and args.dataset != "mnist":
        raise ValueError("--sample is the bundled MNIST sample; it needs --dataset mnist")
    if args.shards is not None:
        if args.dataset != "natural" or args.n_train is not None:
            raise ValueError("--shards streams natural-image patches: it needs --dataset "
                             "natural and takes every prepared patch (no --n-train)")
        train = ShardedArray(args.shards)
        size = shard_patch_side(train, args.patch)
        if train.n_features != size * size:
            raise ValueError(f"--shards {args.shards} holds {train.n_features} features per "
                             f"row, not grey {size}x{size} patches")
        # held out as the prepared patches were made (their index records the whitening)
        test = natural_patches(size, args.n_test, images=args.images,
                               whiten=train.meta.get("whiten", "1f"),
                               seed=(args.seed + 1) % 2**32)  # --seed may be the largest
        return train, test, (size, size)
    if args.dataset == "mnist":
        kw = {"sample": True} if args.sample else {"data_dir": args.data_dir}
        train = mnist_vectors(load_mnist("train", **kw)[0])
        test = mnist_vectors(load_mnist("test", **kw)[0])
        if args.n_train is not None:
            train = train[: args.n_train]
        return train, test[: args.n_test], (28, 28)
    n_train = 100_000 if args.n_train is None else args.n_train
    patches = natural_patches(args.patch, n_train + args.n_test, images=args.images,
                              whiten="1f", seed=args.seed)
    return patches[:n_train], patches[n_train:], (args.patch, args.patch)


def _refuse_other_whitening(prepared: ShardedArray, shards: str) -> None:
    """A ``ValueError`` where ``prepare-patches`` 1/f-whitened the patches at another cut-off
    than the held-out patches would be (datasets it prepared before ``whiten_1f`` took Olshausen
    & Field's cut-off record none; others, written by ``write_shards``, say nothing of it).

    Parameters
    ----------
    prepared : ShardedArray
        The dataset of ``--shards``.
    shards : str
        Its folder, for the message.
    """
    meta = prepared.meta
    if meta.get("whiten") == "1f" and meta.get("whiten_cutoff") != OLSHAUSEN_FIELD_CUTOFF:
        raise ValueError(
            f"--shards {shards} were whitened at another cut-off "
            f"({meta.get('whiten_cutoff', '0.2 cycles/pixel, before 2026-12-07')}) than the "
            f"held-out patches would be ({OLSHAUSEN_FIELD_CUTOFF}, Olshausen & Field's); "
            "prepare them again with latentebm prepare-patches")


def run(args: argparse.Namespace) -> Run:
    """Learn the dictionary, measure held-out codes and atom shapes, write metrics and figures.

    Under ``torchrun`` every rank trains; rank 0 alone evaluates and writes the results.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm sparse-coding`` (:func:`add_arguments`): ``dataset``,
        ``atoms``, ``patch``, ``images``, ``n_train``, ``n_test``, ``batch_size``, ``method``,
        ``codes``, ``init``, ``sample``, ``lam`` and the common ones.

    Returns
    -------
    Run
        The output folder, with the checkpoint, ``metrics.json`` and the figures.
    """
    lam = DEFAULT_LAM[args.dataset] if args.lam is None else args.lam
    device = resolve_device(args.device)
    codes = DEFAULT_CODES[args.dataset] if args.codes is None else args.codes
    atoms_sign = (DEFAULT_ATOMS_SIGN[args.dataset] if args.atoms_sign is None
                  else args.atoms_sign)
    # a prepared dataset fixes the patch side (its index says which), whatever --patch says
    patch = args.patch
    if args.shards is not None:
        prepared = ShardedArray(args.shards, verify=False)
        patch = shard_patch_side(prepared, args.patch)
        _refuse_other_whitening(prepared, args.shards)
    run_dir = Run.from_args(args, lam=lam, codes=codes, atoms_sign=atoms_sign, patch=patch)
    train, test, image_shape = load_data(args)

    model = SparseCoding(train.shape[1], args.atoms, lam, nonneg=codes == "nonneg",
                         nonneg_atoms=atoms_sign == "nonneg", init=args.init,
                         seed=args.seed, device=device)
    history = model.fit(train, epochs=args.epochs, batch_size=args.batch_size,
                        method=args.method, checkpoint=run_dir.checkpoint, resume=args.resume,
                        progress=not args.quiet)
    train_seconds = sum(epoch["seconds"] for epoch in history)  # resumed epochs included
    if not distributed.is_main():  # the model is the same on every rank: rank 0 reports
        return run_dir

    Y = torch.from_numpy(test).to(device)
    result = model.encode(Y, tol=1e-5, max_iter=2000)
    residual = Y - model.decode(result.z)
    atoms = model.dictionary().T.cpu().numpy()
    metrics = {
        "dataset": args.dataset,
        "n_train": int(train.shape[0]),
        "n_test": int(test.shape[0]),
        "n_atoms": args.atoms,
        "lam": lam,
        "codes": codes,
        "test_mean_energy": float(result.energy.mean()),
        "test_mean_nonzeros": float((result.z != 0).sum(1).float().mean()),
        "test_relative_reconstruction_error": float(residual.pow(2).sum() / Y.pow(2).sum()),
        "test_codes_converged": float(result.converged.float().mean()),
        "train_seconds": train_seconds,
        "history": history,
    }
    viz.atom_grid(atoms, image_shape, run_dir.path("atoms.png"),
                  title=f"{args.atoms} atoms, {args.dataset}, λ = {lam}")
    epochs = np.arange(1, len(history) + 1)
    viz.convergence_curves({"training energy": (epochs, [h["mean_energy"] for h in history])},
                           run_dir.path("training_energy.png"), xlabel="epoch",
                           ylabel="mean energy per sample", logy=False)
    if args.dataset == "mnist":
        metrics["strokes"] = {
            **stroke_summary(atoms, image_shape),
            "share_strict": stroke_summary(atoms, image_shape, level=STRICT_STROKE_LEVEL)["share"],
            "strict_level": STRICT_STROKE_LEVEL,
            "share_localized": localization_summary(atoms, image_shape)["share_localized"],
        }
        n_show = min(16, test.shape[0])
        pairs = np.concatenate([test[:n_show], residual[:n_show].neg().add(Y[:n_show]).cpu()])
        viz.image_grid(pairs, run_dir.path("reconstructions.png"), image_shape=image_shape,
                       n_cols=n_show, title="held-out digits (top) and reconstructions (bottom)")
    else:
        fits = fit_gabors(atoms, image_shape)
        metrics["gabor"] = gabor_summary(fits)
        oriented = [f for f in fits if is_oriented(f)]  # a blob's orientation means nothing
        if oriented:
            viz.orientation_frequency(
                [f.theta for f in oriented], [f.frequency for f in oriented],
                run_dir.path("orientation_frequency.png"), r2=[f.r2 for f in oriented],
                title=f"Gabor fits of the {len(oriented)} oriented atoms (of {len(fits)}): "
                      "orientation and spatial frequency")
    metrics["wall_seconds"] = run_dir.elapsed()
    run_dir.write_metrics(metrics)
    print(result_text(metrics, run_dir.out))
    return run_dir


def result_text(metrics: dict, out) -> str:
    """The few numbers that matter, the lecture's claim beside them, and where the figures are.

    Parameters
    ----------
    metrics : dict
        The run's metrics as written by :func:`run` (with ``strokes`` or ``gabor``).
    out : str or os.PathLike
        The output folder.

    Returns
    -------
    str
        A few lines of text.
    """
    n_atoms = metrics["n_atoms"]
    if metrics["dataset"] == "mnist":
        s = metrics["strokes"]
        shape = (
            f"strokes: {s['share']:.0%} of {n_atoms} atoms (ink above {s['level']:.0%} of the "
            f"peak fits in {s['max_span']:.0f} px; {s['share_strict']:.0%} at "
            f"{s['strict_level']:.0%}; median ink span {s['median_span']:.0f} px)"
        )
    else:
        g = metrics["gabor"]
        shape = (
            f"Gabor fits: median R² {g['median_r2']:.2f}, {g['share_r2_ge_0_8']:.0%} of "
            f"{n_atoms} atoms with R² ≥ 0.8, orientation spread {g['orientation_spread']:.2f} "
            f"over the {g['n_oriented']} oriented ones"
        )
    return "\n".join(
        [
            f"sparse-coding on {metrics['dataset']}: {metrics['n_train']} training samples, "
            f"λ = {metrics['lam']}, {metrics['codes']} codes, "
            f"{metrics['train_seconds']:.0f} s training",
            f"  {shape}",
            f"  lecture: {CLAIM[metrics['dataset']]}",
            f"  held-out: relative reconstruction error "
            f"{metrics['test_relative_reconstruction_error']:.3f}, "
            f"{metrics['test_mean_nonzeros']:.1f} non-zeros per code, mean energy "
            f"{metrics['test_mean_energy']:.3f}",
            f"  figures: {Path(out) / 'atoms.png'} (atoms), "
            + ("reconstructions.png" if metrics["dataset"] == "mnist"
               else "orientation_frequency.png" if metrics["gabor"]["n_oriented"]
               else "no orientation figure (no oriented atom)")
            + ", training_energy.png",
        ]
    )
