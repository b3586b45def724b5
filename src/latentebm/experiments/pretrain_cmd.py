"""``latentebm pretrain``: does a convolutional sparse auto-encoder's encoder help a small convnet
on MNIST when labelled samples are few?

The auto-encoder is trained without labels on MNIST training digits. The classifier's first
layer (convolution, tanh, per-map gain) starts from its encoder, or from PyTorch's default
random initialisation; the rest of the net is identical and randomly initialised with the same
seed. Both are trained on ``n`` labelled digits per class and tested on the 10,000 test digits.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from .._io import atomic_path
from .._validation import resolve_device
from ..data import load_mnist, mnist_vectors
from ..models.conv_autoencoder import ConvSparseAutoencoder
from ._args import add_common_arguments
from ._run import Run

NAME = "pretrain"
HELP = ("MNIST with few labels: a convnet whose first layer starts from a convolutional sparse "
        "auto-encoder, against random initialisation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``latentebm pretrain`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    """
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[1, 5, 10, 100])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default: 3)")
    parser.add_argument("--filters", type=int, default=16, help="first-layer maps (default: 16)")
    parser.add_argument("--kernel", type=int, default=7, help="first-layer kernel (default: 7)")
    parser.add_argument("--n-unlabelled", type=int, default=5000,
                        help="training digits for the auto-encoder, labels unused (default 5000)")
    parser.add_argument("--steps", type=int, default=300,
                        help="classifier Adam steps per run (default: 300)")
    parser.add_argument("--classifier-lr", type=float, default=1e-3)
    parser.add_argument("--n-test", type=int, default=10000, help="test digits (default: all)")
    parser.add_argument("--fista-iter", type=int, default=10)
    parser.add_argument("--sample", action="store_true",
                        help="use the small MNIST sample bundled with the package (offline)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    add_common_arguments(parser, epochs=3, lam=0.2)


class SmallConvNet(nn.Module):
    """conv(k, ``filters``) → tanh → per-map gain → max-pool 2 → conv 5×5 (32) → ReLU →
    max-pool 2 → linear (10). The first three stages have the auto-encoder's encoder form.

    Parameters
    ----------
    filters : int
        Maps of the first convolution.
    kernel : int
        Kernel side of the first convolution (padded to keep 28 × 28).
    """

    def __init__(self, filters: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, kernel, padding=kernel // 2)
        self.gain = nn.Parameter(torch.ones(filters))
        self.conv2 = nn.Conv2d(filters, 32, 5, padding=2)
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a batch of digits.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, 1, 28, 28)
            Digits, pixels in [0, 1].

        Returns
        -------
        torch.Tensor of shape (batch, 10)
            Logits.
        """
        x = self.gain[None, :, None, None] * torch.tanh(self.conv1(x))
        x = F.max_pool2d(x[..., :28, :28], 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))

    def load_encoder(self, model: ConvSparseAutoencoder) -> None:
        """Copy the encoder's kernels, biases and gains into the first layer.

        Parameters
        ----------
        model : ConvSparseAutoencoder
            A grey auto-encoder with ``filters`` maps of ``kernel × kernel`` kernels.
        """
        with torch.no_grad():
            self.conv1.weight.copy_(model.encoder)
            self.conv1.bias.copy_(model.bias)
            self.gain.copy_(model.gain)


def labelled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random examples of every digit (seeded).

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Digit labels 0-9.
    per_class : int
        Examples per digit (at most the rarest digit's count).
    seed : int
        Seed of the draw.

    Returns
    -------
    ndarray of shape (10 * per_class,)
        Indices into ``labels``, grouped by digit.
    """
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.concatenate(picks)


def train_classifier(net: SmallConvNet, x: torch.Tensor, y: torch.Tensor, steps: int,
                     lr: float, seed: int) -> None:
    """Train ``net`` in place with Adam on cross-entropy, mini-batches of at most 64.

    Parameters
    ----------
    net : SmallConvNet
        The classifier.
    x : torch.Tensor of shape (n, 1, 28, 28)
        Labelled digits.
    y : torch.Tensor of shape (n,)
        Their labels (int64).
    steps : int
        Adam steps.
    lr : float
        Adam step size.
    seed : int
        Seed of the mini-batch draws.
    """
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    batch = min(len(x), 64)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=gen)[:batch].to(x.device)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        optimizer.step()


def accuracy(net: SmallConvNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` that ``net`` classifies correctly.

    Parameters
    ----------
    net : SmallConvNet
        The classifier.
    x : torch.Tensor of shape (n, 1, 28, 28)
        Digits (``n >= 1``).
    y : torch.Tensor of shape (n,)
        Their labels.

    Returns
    -------
    float
        Accuracy in [0, 1].
    """
    with torch.no_grad():
        hits = sum(int((net(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
                   for i in range(0, len(x), 1000))
    return hits / len(x)


def plot(table: dict[str, dict[str, list[float]]], counts: list[int], path) -> None:
    """Test accuracy (mean ± std over seeds) against labelled digits per class.

    Parameters
    ----------
    table : dict of str to dict of str to list of float
        ``table[str(n)][init]``: the accuracies of each seed, ``init`` being
        ``"pretrained"`` or ``"random"``.
    counts : list of int
        Labelled digits per class, the keys of ``table``.
    path : str or os.PathLike
        PNG file to write.
    """
    fig = Figure(figsize=(6.0, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for init, style in (("pretrained", "o-"), ("random", "s--")):
        accs = [np.array(table[str(n)][init]) for n in counts]
        ax.errorbar(counts, [100 * a.mean() for a in accs], yerr=[100 * a.std() for a in accs],
                    fmt=style, capsize=3, label=f"first layer: {init}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled digits per class")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")


def run(args: argparse.Namespace) -> Run:
    """Train the auto-encoder, then classifiers from its encoder and from random, per count.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm pretrain`` (:func:`add_arguments`):
        ``labels_per_class``, ``seeds``, ``filters``, ``kernel``, ``n_unlabelled``, ``steps``,
        ``classifier_lr``, ``n_test``, ``fista_iter``, ``sample``, ``threads`` and the common
        ones.

    Returns
    -------
    Run
        The output folder, with the auto-encoder, ``table.md``, ``metrics.json`` and
        ``accuracy.png``.
    """
    counts = sorted(set(args.labels_per_class))
    if min(counts) < 1 or args.seeds < 1 or args.steps < 1:
        raise ValueError("--labels-per-class, --seeds and --steps must be positive")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    run_dir = Run(args.out, config, resume=args.resume)
    kw = {"sample": True} if args.sample else {"data_dir": args.data_dir}
    train_images, train_labels = load_mnist("train", **kw)
    test_images, test_labels = load_mnist("test", **kw)
    if max(counts) > np.bincount(train_labels).min():
        raise ValueError(f"--labels-per-class {max(counts)} exceeds the rarest digit's count")

    def tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mnist_vectors(images).reshape(-1, 1, 28, 28)).to(device)

    unlabelled = tensor(train_images[: args.n_unlabelled])
    x_test = tensor(test_images[: args.n_test])
    y_test = torch.from_numpy(test_labels[: args.n_test].astype(np.int64)).to(device)

    final = run_dir.out / "autoencoder.safetensors"
    if args.resume and final.exists():
        ae = ConvSparseAutoencoder.load(final, device=device)
    else:
        ae = ConvSparseAutoencoder(args.filters, args.kernel, 1, lam=args.lam, seed=args.seed,
                                   device=device)
        ae.fit(unlabelled, epochs=args.epochs, batch_size=32, lr=0.01,
               max_iter=args.fista_iter, checkpoint=run_dir.checkpoint, resume=args.resume,
               progress=not args.quiet)
        ae.save(run_dir.path("autoencoder.safetensors"))

    table: dict[str, dict[str, list[float]]] = {}
    for n in counts:
        table[str(n)] = {"pretrained": [], "random": []}
        for s in range(args.seeds):
            seed = args.seed * 1000 + s
            idx = labelled_subset(train_labels, n, seed)
            x = tensor(train_images[idx])
            y = torch.from_numpy(train_labels[idx].astype(np.int64)).to(device)
            for init in ("pretrained", "random"):
                torch.manual_seed(seed)
                net = SmallConvNet(args.filters, args.kernel).to(device)
                if init == "pretrained":
                    net.load_encoder(ae)
                train_classifier(net, x, y, args.steps, args.classifier_lr, seed)
                table[str(n)][init].append(accuracy(net, x_test, y_test))
    plot(table, counts, run_dir.path("accuracy.png"))

    summary = {
        str(n): {init: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v}
                 for init, v in table[str(n)].items()}
        for n in counts
    }
    lines = ["| labels/class | pretrained first layer | random first layer | difference |",
             "|---:|---:|---:|---:|"]
    for n in counts:
        p, r = summary[str(n)]["pretrained"], summary[str(n)]["random"]
        lines.append(f"| {n} | {100 * p['mean']:.1f} ± {100 * p['std']:.1f} | "
                     f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} | "
                     f"{100 * (p['mean'] - r['mean']):+.1f} |")
    table_md = "\n".join(lines) + "\n"
    with atomic_path(run_dir.path("table.md"), ".md") as tmp:
        tmp.write_text(f"Test accuracy (%) on {len(x_test)} MNIST test digits, mean ± std over "
                       f"{args.seeds} seeds.\n\n{table_md}")
    metrics = {
        "accuracy": summary,
        "autoencoder_history": ae.history_,
        "n_unlabelled": int(unlabelled.shape[0]),
        "n_test": int(len(x_test)),
        "wall_seconds": run_dir.elapsed(),
        "std": "population standard deviation over seeds (ddof = 0)",
        "steps_per_run": args.steps,
    }
    run_dir.write_metrics(metrics)
    return run_dir
