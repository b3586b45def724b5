"""The data of the unrolled-inference commands (lista, psd): MNIST digits or natural-image patches,
split into training and held-out signals, and the run folder they write to."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from .._validation import resolve_device
from ..data import load_mnist, mnist_vectors, natural_patches
from ._args import count_argument
from ._run import Run, prepare_out


def add_dataset_arguments(parser: argparse.ArgumentParser, *, n_train: int, n_test: int) -> None:
    """Flags shared by ``latentebm lista`` and ``latentebm psd``: which data and how much of it.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    n_train, n_test : int
        Defaults of ``--n-train`` and ``--n-test``.
    """
    parser.add_argument("--dataset", choices=("mnist", "natural"), default="mnist",
                        help="MNIST digits or whitened natural-image patches (default: mnist)")
    parser.add_argument("--atoms", type=count_argument, default=256,
                        help="dictionary size (default: 256)")
    parser.add_argument("--n-train", type=count_argument, default=n_train,
                        help=f"training signals (default: {n_train})")
    parser.add_argument("--n-test", type=count_argument, default=n_test,
                        help=f"held-out signals (default: {n_test})")
    parser.add_argument("--patch-size", type=count_argument, default=12,
                        help="natural-image patch side (default: 12)")
    parser.add_argument("--sample", action="store_true",
                        help="use the MNIST sample bundled with the package (offline demo)")
    parser.add_argument("--dictionary", default=None,
                        help="a SparseCoding checkpoint to use instead of learning a dictionary")


def load_dataset(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Training and held-out rows (float32) and the image shape of one row.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments; reads ``dataset``, ``n_train``, ``n_test``, ``sample``,
        ``data_dir``, ``patch_size`` and ``seed``.

    Returns
    -------
    train : ndarray of shape (n_train, n_features)
        Training rows (``n_features`` is 784 for MNIST, ``patch_size ** 2`` for patches;
        MNIST gives fewer rows when the split is smaller than asked).
    test : ndarray of shape (n_test, n_features)
        Held-out rows.
    image_shape : tuple of (int, int)
        ``(28, 28)`` or ``(patch_size, patch_size)``.
    """
    if args.dataset == "mnist":
        kw: dict[str, Any] = {"sample": True} if args.sample else {"data_dir": args.data_dir}
        train, _ = load_mnist("train", **kw)
        test, _ = load_mnist("test", **kw)
        return mnist_vectors(train[: args.n_train]), mnist_vectors(test[: args.n_test]), (28, 28)
    if args.sample:
        raise ValueError("--sample applies to --dataset mnist only")
    size = args.patch_size
    X = natural_patches(size, args.n_train + args.n_test, seed=args.seed)
    return X[: args.n_train], X[args.n_train :], (size, size)


def open_run(args: argparse.Namespace, **settings: Any
             ) -> tuple[Run, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The run folder (its configuration: every flag), the training and held-out rows
    ``(n, n_features)`` on ``--device``, and the image shape of one row.

    Parameters
    ----------
    args : argparse.Namespace
        The command's arguments: every flag goes into ``config.json`` (``n_train`` and
        ``n_test`` as the sizes loaded); reads ``out``, ``device``, ``resume`` and those of
        :func:`load_dataset`.
    **settings
        Values the command resolved from its flags, recorded over them (e.g. a default that
        depends on another flag).

    Returns
    -------
    run : Run
        The run folder.
    Y : torch.Tensor of shape (n_train, n_features)
        Training rows.
    Yt : torch.Tensor of shape (n_test, n_features)
        Held-out rows.
    image_shape : tuple of (int, int)
        Shape of one row as an image.
    """
    device = resolve_device(args.device)
    prepare_out(args.out)  # a folder that cannot be used is refused before the data load
    Y_np, Yt_np, image_shape = load_dataset(args)
    # the sizes used, which the bundled sample caps (20 000 training digits)
    out = Run.from_args(args, **{"n_train": len(Y_np), "n_test": len(Yt_np), **settings})
    return out, torch.from_numpy(Y_np).to(device), torch.from_numpy(Yt_np).to(device), image_shape

