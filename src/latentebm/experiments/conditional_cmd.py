"""``latentebm conditional``: the general conditional model ``E(x, y, z) = ½‖y − Dec(Pred(x), z)‖²
+ λR(z)`` on a multimodal task.

``--task mnist-completion``: ``x`` is the top half of a digit (14 × 28), ``y`` the bottom half.
Predictor: an MLP ``x → h``; decoder ``Dec(h, z) = h + Wz`` with ``W`` over-complete
(``--atoms`` unit-norm columns, more than the 392 pixels of ``y``). Trains the model with λ and
the same model with λ = 0, then measures on held-out digits the ranking of the true bottom half
among other digits' bottoms by free energy, and best-of-N completions against ``z = 0``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import viz
from .._docs import fill_doc
from .._validation import resolve_device
from ..data import load_mnist, mnist_vectors
from ..energy import ConditionalLinearDecoder, LatentVariableEBM
from ..training import distributed
from . import conditional_eval as ev
from ._args import (
    add_common_arguments,
    add_defaulted_flags,
    command_arguments,
    count_argument,
    positive_argument,
)
from ._run import Run
from .claims import lecture_verdicts

NAME = "conditional"
HELP = "conditional latent-variable EBM E(x, y, z): complete the bottom half of an MNIST digit"
TASKS = ("mnist-completion",)
HALF = 14


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="mnist-completion",
                        help="the conditional problem: x is the top half of a digit, y its "
                        "bottom half (default: mnist-completion)")
    add_common_arguments(parser, epochs=4, lam=1.0)
    parser.add_argument("--atoms", type=count_argument, default=512,
                        help="latent size, over-complete for the 392 pixels of y (default: 512)")
    parser.add_argument("--hidden", type=count_argument, default=512,
                        help="predictor MLP width (512)")
    parser.add_argument("--codes", choices=["nonneg", "signed"], default="nonneg",
                        help="R(z): non-negative L1 or L1 (default: nonneg)")
    parser.add_argument("--batch-size", type=count_argument, default=256,
                        help="mini-batch (default: 256)")
    parser.add_argument("--lr", type=positive_argument, default=1e-3,
                        help="Adam step (default: 1e-3)")
    add_defaulted_flags(parser, count_argument, [
        ("--n-train", 30000, "training digits"),
        ("--n-test", 500, "held-out digits ranked against each other"),
    ])
    parser.add_argument("--candidates", type=count_argument, default=10,
                        help="candidates per held-out top half, the true one included (10)")
    add_defaulted_flags(parser, count_argument, [
        ("--best-of", 10, "latents per digit for best-of-N completions"),
    ])
    parser.add_argument("--sample", action="store_true",
                        help="use the small MNIST sample bundled with the package (offline)")


add_arguments = command_arguments(NAME, _add_flags)

LATENT_BANK = 5000
"""Training digits whose latents the best-of-N completions draw from (the first ones)."""


def halves(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom halves ``(n, 392)`` each of 28 × 28 digits, pixels in [0, 1].

    Parameters
    ----------
    images : ndarray of shape (n, 28, 28)
        uint8 digits (or floats in [0, 1]).

    Returns
    -------
    top : ndarray of shape (n, 392)
        Rows 0-13 of each digit, flattened, float32.
    bottom : ndarray of shape (n, 392)
        Rows 14-27 of each digit, flattened, float32.
    """
    v = mnist_vectors(images).reshape(-1, 28, 28)
    return v[:, :HALF].reshape(len(v), -1), v[:, HALF:].reshape(len(v), -1)


def build_model(lam: float, args: argparse.Namespace, device: torch.device) -> LatentVariableEBM:
    """MLP predictor ``x → h`` and ``Dec(h, z) = h + Wz``, seeded.

    Parameters
    ----------
    lam : float
        λ of the latent regulariser (0 gives the unregularised model).
    args : argparse.Namespace
        The command's arguments; reads ``seed``, ``hidden``, ``atoms`` and ``codes``.
    device : torch.device
        Where the model lives.

    Returns
    -------
    LatentVariableEBM
        Untrained model with a ``392 → hidden → 392`` predictor and a ``(392, atoms)``
        decoder ``W``.
    """
    n = HALF * 28
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        predictor = nn.Sequential(nn.Linear(n, args.hidden), nn.ReLU(), nn.Linear(args.hidden, n))
    decoder = ConditionalLinearDecoder.random(n, args.atoms, seed=args.seed, offset="identity")
    reg = "nonneg_l1" if args.codes == "nonneg" else "l1"
    return LatentVariableEBM(predictor, decoder, reg, lam).to(device)


@fill_doc
def completions_figure(path, model: LatentVariableEBM, X: torch.Tensor, Y: torch.Tensor,
                       latents: torch.Tensor, title: str) -> None:
    """Per row: the given top half, completions from several latents, ``z = 0``, the truth.

    Parameters
    ----------
    {png_path_short}
    model : LatentVariableEBM
        The trained model.
    X : torch.Tensor of shape (n_rows, 392)
        Top halves.
    Y : torch.Tensor of shape (n_rows, 392)
        True bottom halves.
    latents : torch.Tensor of shape (n_rows, n_latents, n_atoms)
        Latents to decode for each row.
    title : str
        Figure title.
    """
    n_rows, n_lat = latents.shape[:2]
    preds = model.predict(X.repeat_interleave(n_lat, 0), latents.flatten(0, 1))
    preds = preds.reshape(n_rows, n_lat, -1)
    zero = model.predict(X, torch.zeros_like(latents[:, 0]))
    tiles = []
    for i in range(n_rows):
        tiles.append(torch.cat([X[i], torch.full_like(Y[i], 0.5)]))
        tiles.extend(torch.cat([X[i], p]) for p in preds[i])
        tiles.append(torch.cat([X[i], zero[i]]))
        tiles.append(torch.cat([X[i], Y[i]]))
    images = torch.stack(tiles).clamp(0, 1).cpu().numpy()
    viz.image_grid(images, path, image_shape=(28, 28), n_cols=n_lat + 3, value_range=(0, 1),
                   title=title)


def run(args: argparse.Namespace) -> Run:
    """Train the λ and λ = 0 models, measure ranking and completions, write figures and metrics.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm conditional`` (:func:`add_arguments`): ``lam``,
        ``atoms``, ``hidden``, ``codes``, ``batch_size``, ``lr``, ``n_train``, ``n_test``,
        ``candidates``, ``best_of``, ``sample`` and the common ones (``out``, ``device``,
        ``seed``, ``epochs``, ``resume``, ``data_dir``, ``quiet``).

    Returns
    -------
    Run
        The output folder, with ``metrics.json``, the checkpoints and the figures written.
    """
    if args.lam <= 0:
        raise ValueError(f"--lam must be > 0 (the λ = 0 model is trained as well), got {args.lam}")
    device = resolve_device(args.device)
    out = Run.from_args(args)
    kw: dict[str, Any] = {"sample": True} if args.sample else {"data_dir": args.data_dir}
    Xtr, Ytr = (torch.from_numpy(a[: args.n_train]).to(device)
                for a in halves(load_mnist("train", **kw)[0]))
    Xte, Yte = (torch.from_numpy(a[: args.n_test]).to(device)
                for a in halves(load_mnist("test", **kw)[0]))
    n_bank = min(Xtr.shape[0], LATENT_BANK)
    if args.best_of > n_bank:
        raise ValueError(f"--best-of {args.best_of} exceeds the {n_bank} training digits whose "
                         f"latents are drawn from (the first {LATENT_BANK} at most)")
    if args.candidates < 2:  # checked before training, like the test size
        raise ValueError(f"--candidates must be at least 2 (the true bottom half and another), "
                         f"got {args.candidates}")
    if Xte.shape[0] < 2:  # checked before training: the ranking needs another candidate
        raise ValueError(f"--n-test must give at least 2 test digits (each is ranked against "
                         f"the others' bottom halves), got {Xte.shape[0]}")

    runs = {f"λ = {args.lam:g}": (args.lam, out.checkpoint),
            "λ = 0": (0.0, out.path("checkpoint_lam0.safetensors"))}
    metrics: dict[str, Any] = {"task": args.task, "n_train": int(Xtr.shape[0]),
                               "n_test": int(Xte.shape[0]), "models": {}}
    models = {}
    for label, (lam, ckpt) in runs.items():  # under torchrun every rank trains
        models[label] = model = build_model(lam, args, device)
        model.fit(Xtr, Ytr, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  tol=1e-3, max_iter=100, seed=args.seed, checkpoint=ckpt,
                  resume=args.resume, progress=not args.quiet)
    if not distributed.is_main():  # the models are the same on every rank: rank 0 reports
        return out
    rankings, traces = {}, {}
    for label, (lam, _) in runs.items():
        model = models[label]
        rank = ev.ranking(model, Xte, Yte, n_candidates=min(args.candidates, Xte.shape[0]),
                          seed=args.seed, tol=1e-4, max_iter=300)
        Z_bank = model.infer(Xtr[:n_bank], Ytr[:n_bank], tol=1e-4, max_iter=300)
        latents = ev.neighbour_latents(Xte, Xtr[:n_bank], Z_bank, args.best_of)
        completion = ev.best_of_n(model, Xte, Yte, latents)
        rankings[label] = rank
        traces[label] = (np.arange(1, len(model.energy_trace_) + 1),
                         np.array(model.energy_trace_))
        metrics["models"][label] = {
            "lam": lam, "ranking": {k: v for k, v in rank.items() if not k.startswith("_")},
            "completion": completion, "history": model.history_,
            "mean_nonzeros_train_bank": float((Z_bank != 0).sum(1).double().mean()),
        }
        if lam > 0:
            n_show = min(8, Xte.shape[0])
            completions_figure(
                out.path("completions.png"), model, Xte[:n_show], Yte[:n_show],
                latents[:n_show, : min(6, args.best_of)],
                "top half given | completions from sparse latents | z = 0 | truth")
    viz.convergence_curves(traces, out.path("energy_curve.png"), xlabel="training step",
                           ylabel="mean F(x, y) of the batch", logy=False,
                           title="training lowers the energy of observed pairs")
    ev.ranking_figure(out.path("ranking.png"), rankings)
    metrics["seconds"] = out.elapsed()
    written = out.write_metrics(metrics)
    for label, m in metrics["models"].items():
        r, c = m["ranking"], m["completion"]
        print(f"{label}: pairwise ranking {100 * r['pairwise_ranking']:.1f} %, top-1 of "
              f"{r['n_candidates']} {100 * r['top1_accuracy']:.1f} %; best-of-"
              f"{c['n_latents']} MSE {c['best_of_n_mse']:.4f} vs z = 0 {c['z0_mse']:.4f}")
    print(lecture_verdicts(NAME, written))
    return out
