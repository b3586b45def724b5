"""What the VAE commands share (vae, vae-fuzzy-balls): model arguments, dynamically binarised
MNIST, training with a resumable checkpoint, test-set evaluation."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from .._docs import fill_doc
from .._validation import resolve_device
from ..data import load_mnist, mnist_vectors
from ..models.vae import VAE
from ..models.vae_parts import binarize
from ..training.checkpoint import read_checkpoint
from ._args import (
    add_choice_flag,
    add_common_arguments,
    count_argument,
    non_negative_argument,
    positive_argument,
)

DEFAULT_IWAE_K = 5
"""Samples per digit of ``--objective iwae`` when ``--iwae-k`` is not given."""
DEFAULT_HIDDEN = 400
"""The MLP encoder's one hidden layer when ``--hidden`` is not given (784-400-20)."""


@fill_doc
def add_vae_arguments(parser: argparse.ArgumentParser, *, epochs: int, latent: int) -> None:
    """Flags shared by ``vae`` and ``vae-fuzzy-balls``, after the common flags.

    Parameters
    ----------
    {cmd_parser}
    epochs : int
        Default of ``--epochs``.
    latent : int
        Default of ``--latent``.
    """
    add_common_arguments(parser, epochs=epochs, lam=None)
    parser.add_argument(
        "--latent", type=count_argument, default=latent,
        help=f"latent dimensions (default: {latent})"
    )
    parser.add_argument(
        "--hidden",
        type=count_argument,
        nargs="+",
        default=None,
        help="hidden layer sizes of the MLP encoder (decoder mirrored; default: 400); the "
             "conv encoder has none",
    )
    add_choice_flag(parser, "--encoder", ("mlp", "conv"), "encoder/decoder networks")
    parser.add_argument("--batch-size", type=count_argument, default=128,
                        help="batch size (default: 128)")
    parser.add_argument("--lr", type=positive_argument, default=1e-3,
                        help="Adam learning rate (default: 1e-3)")
    parser.add_argument(
        "--warmup-epochs",
        type=non_negative_argument,
        default=0.0,
        help="β rises linearly from 0 over this many epochs (default: 0)",
    )
    add_choice_flag(parser, "--objective", ("elbo", "iwae"),
                    "training objective: the ELBO, or the importance-weighted bound with "
                    "--iwae-k samples per digit")
    parser.add_argument(
        "--iwae-k", type=count_argument, default=None,
        help="samples per digit of the importance-weighted bound (--objective iwae only; "
             f"default: {DEFAULT_IWAE_K})",
    )
    add_choice_flag(parser, "--lr-schedule", ("constant", "cosine"),
                    "Adam learning rate: constant, or cosine decay to 0 over --epochs")
    parser.add_argument(
        "--threads", type=count_argument, default=None,
        help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="use the bundled 20 000/500-digit MNIST sample (offline demo)",
    )


def samples_per_digit(args: argparse.Namespace) -> int:
    """The training objective's samples per digit: ``--iwae-k`` for the importance-weighted
    bound, one for the ELBO.

    Parameters
    ----------
    args : argparse.Namespace
        The command's flags; reads ``objective`` and ``iwae_k``.

    Returns
    -------
    int
        Samples per digit.

    Raises
    ------
    ValueError
        ``--iwae-k`` was given with ``--objective elbo``, where it would be ignored.
    """
    if args.objective == "elbo":
        if args.iwae_k is not None:
            raise ValueError(f"--iwae-k {args.iwae_k} applies to --objective iwae; the ELBO "
                             "uses one sample per digit")
        return 1
    return DEFAULT_IWAE_K if args.iwae_k is None else args.iwae_k


def mlp_hidden(args: argparse.Namespace) -> list[int]:
    """The MLP's hidden layer sizes: ``--hidden``, by default ``[400]``.

    Parameters
    ----------
    args : argparse.Namespace
        The command's flags; reads ``hidden`` and ``encoder``.

    Returns
    -------
    list of int
        Layer sizes (recorded for the conv encoder too, which does not use them).

    Raises
    ------
    ValueError
        ``--hidden`` was given with ``--encoder conv``, where it would be ignored.
    """
    if args.hidden is None:
        return [DEFAULT_HIDDEN]
    if args.encoder == "conv":
        raise ValueError(f"--hidden {' '.join(map(str, args.hidden))} sets the MLP encoder's "
                         "layers; --encoder conv has a fixed convolutional network")
    return list(args.hidden)


def vae_config(name: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The run's ``config.json``: the command ``name``, the flags of :func:`add_vae_arguments`
    and the common ones, and the command's own settings ``extra``.

    Parameters
    ----------
    name : str
        The command's name.
    args : argparse.Namespace
        The command's arguments; reads the flags of :func:`add_vae_arguments` (but not
        ``threads``) and ``seed``, ``sample``, ``data_dir``, ``epochs``, ``device``,
        ``resume``, ``quiet``, ``out``.
    **extra
        The command's own settings.

    Returns
    -------
    dict
        JSON-ready configuration.
    """
    return {
        "command": name,
        "latent": args.latent,
        "hidden": mlp_hidden(args),
        "encoder": args.encoder,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_epochs": args.warmup_epochs,
        "objective": args.objective,
        "iwae_k": samples_per_digit(args),
        "lr_schedule": args.lr_schedule,
        "seed": args.seed,
        "sample": args.sample,
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        "epochs": args.epochs,
        **extra,
        "device": args.device,
        "resume": args.resume,
        "quiet": args.quiet,
        "out": str(args.out),
    }


def binarized_mnist(args: argparse.Namespace) -> dict[str, Any]:
    """Training probabilities ``(60000, 784)`` in [0, 1] (binarised afresh each batch during
    training), the test set binarised once with a fixed seed, and the test labels.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``sample``, ``data_dir`` and ``device``.

    Returns
    -------
    dict
        ``train``: float32 tensor of shape (n_train, 784) on the device (60000, or 2000 with
        ``--sample``); ``test``: binary float32 tensor of shape (n_test, 784); ``labels``:
        int64 ndarray of shape (n_test,).
    """
    kwargs = {"sample": True} if args.sample else {"data_dir": args.data_dir}
    train_images, _ = load_mnist("train", **kwargs)
    test_images, test_labels = load_mnist("test", **kwargs)
    device = resolve_device(args.device)
    train = torch.from_numpy(mnist_vectors(train_images)).to(device)
    test_p = torch.from_numpy(mnist_vectors(test_images)).to(device)
    gen = torch.Generator(device=device).manual_seed(1234)
    return {"train": train, "test": binarize(test_p, gen), "labels": test_labels}


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (``torch.set_num_threads``) when it was given.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``threads``.
    """
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def train(
    model: VAE,
    X: torch.Tensor,
    args: argparse.Namespace,
    checkpoint: Path,
    *,
    validation: torch.Tensor | None = None,
    max_minutes: float | None = None,
    on_epoch_end: Any = None,
) -> dict[str, Any]:
    """Fit epoch by epoch through the checkpoint (a resumed run equals an uninterrupted one),
    stopping early once ``max_minutes`` of wall time have passed; ``on_epoch_end`` goes to
    :meth:`VAE.fit`. NaN/inf during training becomes a ``ValueError``.

    Parameters
    ----------
    model : VAE
        The model to train.
    X : torch.Tensor of shape (n, 784)
        Training probabilities in [0, 1] (dynamically binarised).
    args : argparse.Namespace
        The command's arguments; reads ``resume``, ``epochs``, ``batch_size``, ``lr``,
        ``warmup_epochs`` and ``quiet``.
    checkpoint : pathlib.Path
        The model's resumable checkpoint.
    validation : torch.Tensor of shape (n_val, 784) or None
        Passed to :meth:`VAE.fit`.
    max_minutes : float or None
        Wall-time budget of this call (checked after each epoch).
    on_epoch_end : callable or None
        ``on_epoch_end(model, history_entry)``, passed to :meth:`VAE.fit`.

    Returns
    -------
    dict
        ``epochs`` (total trained), ``epochs_this_call``, ``train_seconds`` and
        ``images_per_second``.
    """
    start = time.perf_counter()
    first = 0
    if args.resume and checkpoint.exists():
        saved = read_checkpoint(checkpoint, kind="vae").training
        first = saved.position[0] if saved is not None else 0
    monitor_k = getattr(args, "monitor_k", 0)
    fit_args = dict(
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        dynamic_binarization=True,
        objective=args.objective,
        k=samples_per_digit(args),
        lr_schedule=args.lr_schedule,
        schedule_epochs=args.epochs,
        validation=validation,
        nll_k=monitor_k,
        nll_every=getattr(args, "monitor_every", 1),
        on_epoch_end=on_epoch_end,
        checkpoint=checkpoint,
        progress=not args.quiet,
    )
    # with a time limit, one call per epoch, each resuming from the last (so the run can stop
    # between epochs); without, one call; a finished run is only reloaded
    if max_minutes is None:
        targets = [max(args.epochs, first)]
    else:
        targets = list(range(first + 1, args.epochs + 1)) or [first]
    for target in targets:
        try:
            model.fit(X, epochs=target, resume=args.resume or target > first + 1, **fit_args)
        except FloatingPointError as exc:
            raise ValueError(str(exc)) from exc
        if max_minutes is not None and time.perf_counter() - start > 60 * max_minutes:
            break
    epochs_done = len(model.history_) - first
    seconds = sum(h["seconds"] for h in model.history_)
    n = X.shape[0] * len(model.history_)
    return {
        "epochs": len(model.history_),
        # --max-minutes ended training before --epochs
        "stopped_by_time_limit": len(model.history_) < args.epochs,
        "epochs_this_call": epochs_done,
        "train_seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("nan"),
    }


def evaluate(model: VAE, X: torch.Tensor, *, seed: int) -> dict[str, Any]:
    """Test −ELBO (one sample per digit), its two terms, KL per dimension, active units,
    E‖μ‖², mean σ per dimension, the code-to-noise ratio E‖μ‖² / E‖σ‖² (how far apart the
    balls are relative to their size) and the pixel MSE of the reconstruction from μ.

    Parameters
    ----------
    model : VAE
        The trained model (left in eval mode).
    X : torch.Tensor of shape (n, 784)
        Binarised test digits.
    seed : int
        Seed of the one posterior sample per digit.

    Returns
    -------
    dict
        ``test_neg_elbo``, ``reconstruction_nats``, ``kl``, ``kl_per_dim`` (list of length
        latent), ``active_units``, ``e_mu_sq``, ``mean_sigma_per_dim``, ``code_to_noise`` and
        ``reconstruction_mse``.
    """
    gen = torch.Generator(device=model.device).manual_seed(seed)
    model.eval()
    mu, logvar = model.posterior(X)
    rec, sq_err = 0.0, 0.0
    with torch.no_grad():
        for xb, mb in zip(X.split(1000), mu.split(1000), strict=True):
            rec += float(model.loss(xb, beta=1.0, generator=gen).reconstruction) * xb.shape[0]
            sq_err += float((model.decode(mb).flatten(1) - xb.flatten(1)).square().mean(1).sum())
    rec /= X.shape[0]
    kl_dims = model.kl_per_dim(X)
    sigma = torch.exp(0.5 * logvar)
    return {
        "test_neg_elbo": rec + float(kl_dims.sum()),
        "reconstruction_nats": rec,
        "kl": float(kl_dims.sum()),
        "kl_per_dim": kl_dims.tolist(),
        "active_units": model.active_units(X),
        "e_mu_sq": float(mu.square().sum(1).mean()),
        "mean_sigma_per_dim": sigma.mean(0).tolist(),
        "code_to_noise": float(mu.square().sum(1).mean() / logvar.exp().sum(1).mean()),
        "reconstruction_mse": sq_err / X.shape[0],
    }

