"""``latentebm pretrain``: does a convolutional sparse auto-encoder's encoder help a small convnet
on MNIST when labelled samples, or categories, are few?

The auto-encoder is trained without labels on MNIST training digits. The classifier's first
layer (convolution, tanh, per-map gain) starts from its encoder, or from PyTorch's default
random initialisation; with ``--first-layer frozen`` that layer is not trained in either arm.
Every comparison is paired: for one seed both arms see the same labelled digits, the same
initialisation of every other layer and the same minibatches. Both are trained on ``n``
labelled digits of each of the first ``--classes`` digit classes and tested on the test digits
of those classes. The per-seed accuracies, their means, sample standard deviations and paired
tests (:mod:`latentebm.experiments.pretrain_study`) go to ``metrics.json`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import viz
from .._io import write_atomic
from .._validation import resolve_device
from ..data import load_mnist, mnist_vectors
from ..models.conv_autoencoder import ConvSparseAutoencoder
from ..training import distributed
from ..viz._figure import new_figure, save_png
from ._args import (
    add_common_arguments,
    add_defaulted_flags,
    command_arguments,
    count_argument,
    positive_argument,
)
from ._run import Run
from .conv_autoencoder_runs import load_finished
from .pretrain_study import (
    ARMS,
    LECTURE_CLAIM,
    RunStore,
    Setting,
    paired_statistics,
    settings_grid,
    table_markdown,
    verdict,
    wilcoxon_notes,
)

NAME = "pretrain"
HELP = ("MNIST with few labels or few classes: a convnet whose first layer starts from a "
        "convolutional sparse auto-encoder, against random initialisation (paired seeds)")

DEFAULT_CLASSES = [10]
DEFAULT_FIRST_LAYER = "both"
DEFAULT_LABELS = [1, 100]
MNIST_SIDE = 28
"""Height and width of an MNIST digit (the largest first-layer kernel)."""
AUTOENCODER_BATCH = 32
"""Mini-batch of the first layer's auto-encoder (its steps per epoch follow from it)."""


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels-per-class", type=count_argument, nargs="+",
                        default=DEFAULT_LABELS,
                        help="labelled training digits per class, one setting each "
                        f"(default: {' '.join(map(str, DEFAULT_LABELS))})")
    parser.add_argument("--classes", type=count_argument, nargs="+", default=DEFAULT_CLASSES,
                        help="use only the first N digit classes (2 to 10), for training and "
                        "testing; one setting per value (default: "
                        f"{' '.join(map(str, DEFAULT_CLASSES))})")
    parser.add_argument("--first-layer", choices=("finetune", "frozen", "both"),
                        default=DEFAULT_FIRST_LAYER,
                        help="train the first layer with the rest (finetune), keep it fixed in "
                        f"both arms (frozen), or run both (default: {DEFAULT_FIRST_LAYER})")
    parser.add_argument("--seeds", type=count_argument, default=5,
                        help="paired seeds per setting; one seed gives no standard deviation "
                        "or test (default: 5)")
    add_defaulted_flags(parser, count_argument, [
        ("--filters", 16, "first-layer maps"),
        ("--kernel", 7, "first-layer kernel"),
        ("--n-unlabelled", 5000, "training digits for the auto-encoder, labels unused"),
        ("--steps", 300, "classifier Adam steps per run"),
    ])
    add_defaulted_flags(parser, positive_argument,
                        [("--classifier-lr", 1e-3, "classifier Adam step")])
    parser.add_argument("--n-test", type=count_argument, default=10000,
                        help="at most this many test digits of the chosen classes (default: all)")
    add_defaulted_flags(parser, count_argument, [
        ("--fista-iter", 10, "FISTA iterations per code while the auto-encoder trains")])
    parser.add_argument("--sample", action="store_true",
                        help="use the small MNIST sample bundled with the package (offline)")
    parser.add_argument("--threads", type=count_argument, default=None,
                        help="torch CPU threads (default: torch's choice)")
    add_common_arguments(parser, epochs=3, lam=0.2)


add_arguments = command_arguments(NAME, _add_flags)


def check_arguments(args: argparse.Namespace) -> None:
    """Raise a ``ValueError`` naming the flag for any setting the command cannot run.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm pretrain``.
    """
    bad = [c for c in args.classes if not 2 <= c <= 10]
    if bad:
        raise ValueError(f"--classes must lie in 2..10 (the first N digit classes), got {bad[0]}")


class SmallConvNet(nn.Module):
    """conv(k, ``filters``) → tanh → per-map gain → max-pool 2 → conv 5×5 (32) → ReLU →
    max-pool 2 → linear (``n_classes``). The first three stages have the auto-encoder's encoder
    form.

    Parameters
    ----------
    filters, kernel : int
        First-layer maps and kernel size.
    n_classes : int
        Outputs of the last layer.
    """

    def __init__(self, filters: int, kernel: int, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, kernel, padding=kernel // 2)
        self.gain = nn.Parameter(torch.ones(filters))
        self.conv2 = nn.Conv2d(filters, 32, 5, padding=2)
        self.head = nn.Linear(32 * 7 * 7, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of images.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, 1, 28, 28)
            Images.

        Returns
        -------
        torch.Tensor of shape (batch, n_classes)
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
            A trained auto-encoder with ``filters`` maps of this kernel size, one channel.
        """
        with torch.no_grad():
            self.conv1.weight.copy_(model.encoder)
            self.conv1.bias.copy_(model.bias)
            self.gain.copy_(model.gain)

    def first_layer_parameters(self) -> list[nn.Parameter]:
        """The first layer's kernels, biases and gains."""
        return [self.conv1.weight, self.conv1.bias, self.gain]


def labelled_subset(labels: np.ndarray, per_class: int, seed: int,
                    n_classes: int = 10) -> np.ndarray:
    """Indices of ``per_class`` random examples of each of the digits ``0 .. n_classes - 1``.

    Parameters
    ----------
    labels : numpy.ndarray, shape (n,)
        Training labels.
    per_class, seed, n_classes : int
        Examples per class, the generator's seed, the classes used.

    Returns
    -------
    numpy.ndarray, shape (n_classes * per_class,)
    """
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
             for c in range(n_classes)]
    return np.concatenate(picks)


def train_classifier(net: SmallConvNet, x: torch.Tensor, y: torch.Tensor, steps: int,
                     lr: float, seed: int, *, freeze_first_layer: bool = False) -> None:
    """Adam on the cross-entropy of minibatches of at most 64 labelled digits, drawn in a
    seeded order; the first layer is left as it is when frozen.

    Parameters
    ----------
    net : SmallConvNet
        Trained in place.
    x : torch.Tensor of shape (n, 1, 28, 28)
        Labelled images.
    y : torch.Tensor of shape (n,)
        Their classes.
    steps : int
        Adam steps.
    lr : float
        Adam learning rate.
    seed : int
        Seed of the minibatch order.
    freeze_first_layer : bool, default=False
        Keep ``conv1``, its bias and the gains fixed.
    """
    frozen = {id(p) for p in net.first_layer_parameters()} if freeze_first_layer else set()
    params = [p for p in net.parameters() if id(p) not in frozen]
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    batch = min(len(x), 64)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=gen)[:batch].to(x.device)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        optimizer.step()


def accuracy(net: SmallConvNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the images classified as their labels.

    Parameters
    ----------
    net : SmallConvNet
        The classifier.
    x : torch.Tensor of shape (n, 1, 28, 28)
        Images (``n >= 1``).
    y : torch.Tensor of shape (n,)
        Their classes.

    Returns
    -------
    float
        In [0, 1].
    """
    with torch.no_grad():
        hits = sum(int((net(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum())
                   for i in range(0, len(x), 1000))
    return hits / len(x)


def paired_run(setting: Setting, seed: int, args: argparse.Namespace,
               ae: ConvSparseAutoencoder, data: dict[str, Any],
               keep_filters: bool) -> dict[str, Any]:
    """Train and test both arms of one setting with one seed.

    Parameters
    ----------
    setting : Setting
    seed : int
        Picks the labelled digits, every layer's initialisation and the minibatch order, the
        same for both arms.
    args : argparse.Namespace
        The command's flags.
    ae : ConvSparseAutoencoder
        The trained auto-encoder whose encoder the pretrained arm starts from.
    data : dict
        ``to_tensor`` (images → tensor), ``train_images``, ``train_labels``, ``test`` (class
        count → (images, labels) tensors).
    keep_filters : bool
        Also return both arms' first-layer kernels after training (``filters``).

    Returns
    -------
    dict
        ``{"pretrained": accuracy, "random": accuracy, "filters": {...}}``.
    """
    idx = labelled_subset(data["train_labels"], setting.labels_per_class, seed, setting.classes)
    x = data["to_tensor"](data["train_images"][idx])
    y = torch.from_numpy(data["train_labels"][idx].astype(np.int64)).to(x.device)
    x_test, y_test = data["test"][setting.classes]
    result: dict[str, Any] = {}
    filters = {}
    for arm in ARMS:
        torch.manual_seed(seed)
        net = SmallConvNet(args.filters, args.kernel, setting.classes).to(x.device)
        if arm == "pretrained":
            net.load_encoder(ae)
        train_classifier(net, x, y, args.steps, args.classifier_lr, seed,
                         freeze_first_layer=setting.first_layer == "frozen")
        result[arm] = accuracy(net, x_test, y_test)
        filters[arm] = np.round(net.conv1.weight.detach().cpu().numpy(), 6).tolist()
    if keep_filters:
        result["filters"] = filters
    return result


def plot_accuracy(settings: Sequence[Setting], summaries: dict[str, dict[str, Any]],
                  path: Any) -> None:
    """One column per (classes, first-layer mode): top, accuracy against labels per class for
    both arms (error bars: sample std over seeds); bottom, the mean paired difference with its
    95 % t interval.

    Parameters
    ----------
    settings : sequence of Setting
        The settings run.
    summaries : dict
        Setting key → its summary (per arm: ``mean``, ``std``; ``difference``: ``mean``,
        ``ci95``), as :func:`~latentebm.experiments.pretrain_study.paired_statistics` gives.
    path : str or os.PathLike
        The PNG to write.
    """
    groups = sorted({(s.classes, s.first_layer) for s in settings})
    fig = new_figure(4.2 * len(groups), 6.4, layout="constrained")
    axes = fig.subplots(2, len(groups), squeeze=False, sharex="col", height_ratios=(3, 2))
    for col, (classes, mode) in enumerate(groups):
        cells = [s for s in settings if (s.classes, s.first_layer) == (classes, mode)]
        counts = [s.labels_per_class for s in cells]
        top, bottom = axes[0, col], axes[1, col]
        for arm, style in (("pretrained", "o-"), ("random", "s--")):
            rows = [summaries[s.key][arm] for s in cells]
            top.errorbar(counts, [100 * r["mean"] for r in rows],
                         yerr=[100 * (r["std"] or 0.0) for r in rows], fmt=style, capsize=3,
                         label=f"first layer: {arm}")
        diffs = [summaries[s.key]["difference"] for s in cells]
        means = [100 * d["mean"] for d in diffs]
        spans = [(0.0, 0.0) if d["ci95"] is None else
                 (100 * d["mean"] - 100 * d["ci95"][0], 100 * d["ci95"][1] - 100 * d["mean"])
                 for d in diffs]
        bottom.errorbar(counts, means, yerr=np.array(spans).T, fmt="o-", color="k", capsize=3)
        bottom.axhline(0.0, color="grey", lw=0.8)
        top.set_title(f"{classes} classes, first layer {mode}", fontsize=10)
        top.set_ylabel("test accuracy (%)\nmean ± sample std")
        top.legend(fontsize=8)
        bottom.set_ylabel("pretrained − random\n(points, 95 % CI)")
        bottom.set_xlabel("labelled digits per class")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks(counts, [str(c) for c in counts])
            ax.minorticks_off()
            ax.grid(True, which="both", alpha=0.3)
    save_png(fig, path)


def plot_filters(run_dir: Run, settings: Sequence[Setting], store: RunStore) -> dict[str, str]:
    """For each first-layer mode, both arms' first-layer kernels after classifier training
    (seed 0 of the setting with the most classes and labels).

    Parameters
    ----------
    run_dir : Run
        The run folder (the figures go there).
    settings : sequence of Setting
        The settings run.
    store : RunStore
        The per-run results, with each run's first-layer kernels.

    Returns
    -------
    dict
        File name → the setting it shows.
    """
    shown = {}
    for mode in sorted({s.first_layer for s in settings}):
        setting = max(s for s in settings if s.first_layer == mode)
        run = store.get(setting, 0)
        if run is None or "filters" not in run:
            continue
        banks = [np.asarray(run["filters"][arm]) for arm in ARMS]
        name = f"filters_{mode}.png"
        viz.filter_bank_pair(*banks, run_dir.path(name), titles=("pretrained init", "random init"),
                             n_cols=min(len(banks[0]), 8), title="first layer after training")
        shown[name] = setting.describe() + ", seed 0"
    return shown


def _mnist(args: argparse.Namespace, device: torch.device,
           classes: Sequence[int]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The unlabelled auto-encoder images and the classifier data (see :func:`paired_run`)."""
    kw = {"sample": True} if args.sample else {"data_dir": args.data_dir}
    train_images, train_labels = load_mnist("train", **kw)
    test_images, test_labels = load_mnist("test", **kw)
    rarest = np.bincount(train_labels, minlength=10)[: max(classes)].min()
    if max(args.labels_per_class) > rarest:
        raise ValueError(f"--labels-per-class {max(args.labels_per_class)} exceeds the rarest "
                         f"digit's count ({rarest})")

    def to_tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mnist_vectors(images).reshape(-1, 1, 28, 28)).to(device)

    test = {}
    for c in sorted(set(classes)):
        keep = np.flatnonzero(test_labels < c)[: args.n_test]
        test[c] = (to_tensor(test_images[keep]),
                   torch.from_numpy(test_labels[keep].astype(np.int64)).to(device))
    data = {"to_tensor": to_tensor, "train_images": train_images, "train_labels": train_labels,
            "test": test}
    return to_tensor(train_images[: args.n_unlabelled]), data


def _autoencoder(args: argparse.Namespace, run_dir: Run, unlabelled: torch.Tensor,
                 device: torch.device) -> ConvSparseAutoencoder:
    """The trained auto-encoder: loaded from a finished run when resuming, else trained."""
    final = run_dir.out / "autoencoder.safetensors"
    if args.resume and final.exists():
        steps = args.epochs * math.ceil(unlabelled.shape[0] / AUTOENCODER_BATCH)
        return load_finished(final, steps, args.epochs, device)
    ae = ConvSparseAutoencoder(args.filters, args.kernel, 1, lam=args.lam, seed=args.seed,
                               device=device)
    ae.fit(unlabelled, epochs=args.epochs, batch_size=AUTOENCODER_BATCH, lr=0.01,
           max_iter=args.fista_iter, checkpoint=run_dir.checkpoint, resume=args.resume,
           progress=not args.quiet)
    distributed.on_main(ae.save)(run_dir.path("autoencoder.safetensors"))
    return ae


def run(args: argparse.Namespace) -> Run:
    """Train the auto-encoder, then both arms of every setting and seed; write the table,
    the statistics, the figures and ``metrics.json``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm pretrain`` (:func:`add_arguments`).

    Returns
    -------
    Run
        The output folder.
    """
    check_arguments(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.kernel > MNIST_SIDE:
        raise ValueError(f"--kernel {args.kernel} is larger than MNIST's {MNIST_SIDE}x"
                         f"{MNIST_SIDE} digits")
    settings = settings_grid(args.classes, args.labels_per_class, args.first_layer)
    run_dir = Run.from_args(args)
    unlabelled, data = _mnist(args, device, args.classes)
    ae = _autoencoder(args, run_dir, unlabelled, device)
    if not distributed.is_main():  # under torchrun the ranks train the auto-encoder together;
        return run_dir             # rank 0 alone trains the classifiers and reports

    fingerprint = {"autoencoder_steps": ae.n_steps_, "steps": args.steps,
                   "classifier_lr": args.classifier_lr, "n_test": args.n_test,
                   "seed": args.seed, "sample": args.sample}
    store = RunStore(run_dir.path("runs.json"), fingerprint, resume=args.resume)
    todo = [(s, i) for s in settings for i in range(args.seeds) if store.get(s, i) is None]
    for setting, i in tqdm(todo, desc="classifiers (both arms)", unit="run",
                           disable=args.quiet):
        store.put(setting, i, paired_run(setting, args.seed * 1000 + i, args, ae, data,
                                         keep_filters=i == 0))

    summaries = {s.key: paired_statistics(**store.accuracies(s, args.seeds)) for s in settings}
    plot_accuracy(settings, summaries, run_dir.path("accuracy.png"))
    figures = plot_filters(run_dir, settings, store)
    table = table_markdown(settings, summaries)
    verdicts = [verdict(s, summaries[s.key]) for s in settings]
    header = (f"Test accuracy (%) on the MNIST test digits of the chosen classes, mean ± sample "
              f"std (ddof = 1) over {args.seeds} paired seeds; difference = pretrained − random "
              f"(percentage points) with its 95 % t interval.\n\n")
    decides = "the paired t-test decides" if args.seeds > 1 else "no test is run"
    notes = [f"Wilcoxon: {n}; {decides}." for n in wilcoxon_notes(summaries)]
    text = (header + table + "".join(f"\n{n}\n" for n in notes) + "\n"
            + "\n".join(f"- {v}" for v in verdicts) + "\n\n" + LECTURE_CLAIM)
    write_atomic(run_dir.path("table.md"), lambda p: p.write_text(text + "\n", encoding="utf-8"))
    headline = settings[0]
    metrics = {
        "settings": {s.key: {"classes": s.classes, "labels_per_class": s.labels_per_class,
                             "first_layer": s.first_layer, **summaries[s.key],
                             "verdict": verdict(s, summaries[s.key])} for s in settings},
        "accuracy": {str(s.labels_per_class): summaries[s.key] for s in settings
                     if (s.classes, s.first_layer) == (headline.classes, headline.first_layer)},
        "accuracy_setting": {"classes": headline.classes, "first_layer": headline.first_layer},
        "accuracy_by_first_layer": {
            mode: {str(s.labels_per_class): summaries[s.key] for s in settings
                   if (s.classes, s.first_layer) == (headline.classes, mode)}
            for mode in sorted({s.first_layer for s in settings})},
        "autoencoder_history": ae.history_,
        "n_unlabelled": int(unlabelled.shape[0]),
        "n_test": {str(c): int(len(t[0])) for c, t in data["test"].items()},
        "seeds": args.seeds,
        "std": "sample standard deviation over seeds (ddof = 1)",
        "steps_per_run": args.steps,
        "figures": {"accuracy.png": "accuracy against labels per class", **figures},
        "wall_seconds": run_dir.elapsed(),
    }
    run_dir.write_metrics(metrics)
    print("\n".join([table, *notes, *verdicts, LECTURE_CLAIM]))
    return run_dir
