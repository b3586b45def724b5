"""``latentebm vae``: the standard MLP VAE (784-400-20) on dynamically binarised MNIST.

Writes the test −ELBO, the importance-sampled negative log-likelihood (k = 5000) with its
standard errors, and figures of samples, reconstructions, an interpolation between two test
digits, the training curves and (for a 2-D code) the decoded manifold.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import torch

from ..models.vae import VAE
from ..training import distributed
from ..viz import vae as viz_vae
from . import vae_runs as runs
from ._args import (
    add_defaulted_flags,
    command_arguments,
    count_argument,
    non_negative_int_argument,
    positive_argument,
)
from ._run import Run
from .claims import lecture_verdicts

NAME = "vae"
HELP = "MLP VAE on dynamically binarised MNIST: test −ELBO, k-sample NLL, samples, manifold"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    runs.add_vae_arguments(parser, epochs=50, latent=20)
    add_defaulted_flags(parser, count_argument, [
        ("--k", 5000, "importance samples per test digit for log p(x)"),
    ])
    parser.add_argument(
        "--nll-images",
        type=count_argument,
        default=None,
        help="score the k-sample NLL on N test digits drawn at random with --seed "
        "(default: all 10000)",
    )
    parser.add_argument(
        "--monitor-k", type=non_negative_int_argument, default=100,
        help="during training, the importance-sampled NLL with this many samples on "
        "--monitor-images test digits every --monitor-every epochs (0: off; default: 100)",
    )
    add_defaulted_flags(parser, count_argument, [
        ("--monitor-every", 5, "epochs between two NLL estimates during training"),
        ("--monitor-images", 1000, "test digits of the training-time −ELBO and NLL"),
    ])
    parser.add_argument(
        "--max-minutes",
        type=positive_argument,
        default=None,
        help="stop training after the epoch that passes this wall time (default: run all --epochs)",
    )


add_arguments = command_arguments(NAME, _add_flags)


def figures(model: VAE, run: Run, data: dict[str, Any], seed: int) -> None:
    """Samples, reconstructions, an interpolation, curves, and the 2-D manifold.

    Parameters
    ----------
    model : VAE
        The trained model (the manifold is drawn only when its latent is 2-D).
    run : Run
        The run folder the PNG files go to.
    data : dict
        Output of :func:`~latentebm.experiments.vae_runs.binarized_mnist`; ``test``
        (tensor of shape (n_test, 784)) and ``labels`` (shape (n_test,)) are used.
    seed : int
        Seed of the samples.
    """
    gen = torch.Generator(device=model.device).manual_seed(seed)
    X, labels = data["test"], np.asarray(data["labels"])
    viz_vae.sample_grid(model.sample(64, generator=gen).cpu(), run.path("samples.png"))
    x = X[:30]
    with torch.no_grad():
        recon = model.decode(model.encode(x).z)
    viz_vae.reconstruction_pairs(x.cpu(), recon.cpu(), run.path("reconstructions.png"))
    a = int(np.flatnonzero(labels == labels[0])[0])
    b = int(np.flatnonzero(labels != labels[0])[0])
    with torch.no_grad():
        mu = model.encode(X[[a, b]]).z
        t = torch.linspace(0, 1, 11, device=mu.device, dtype=mu.dtype)[:, None]
        path = model.decode((1 - t) * mu[0] + t * mu[1])
    strip = torch.cat([X[a][None], path.flatten(1), X[b][None]])
    viz_vae.interpolation_strip(
        strip.cpu(),
        run.path("interpolation.png"),
        title="test digit, 11 decoded codes on the line between their means, test digit",
    )
    hist = model.history_
    curves = {"train loss (−ELBO at β)": ([h["epoch"] for h in hist], [h["loss"] for h in hist])}
    if hist and "val_neg_elbo" in hist[0]:
        curves["test −ELBO"] = ([h["epoch"] for h in hist], [h["val_neg_elbo"] for h in hist])
    viz_vae.training_curves(curves, run.path("training_curves.png"))
    if model.latent_dim == 2:
        grid = torch.tensor([_normal_quantile(q) for q in np.linspace(0.03, 0.97, 20)])
        z1, z2 = torch.meshgrid(grid, grid.flip(0), indexing="xy")
        codes = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1).to(model.device, model.dtype)
        with torch.no_grad():
            imgs = model.decode(codes)
        viz_vae.latent_manifold(imgs.cpu(), grid, run.path("manifold.png"))


def _normal_quantile(q: float) -> float:
    """Φ⁻¹(q), so a grid of quantiles covers the prior evenly in probability."""
    return math.sqrt(2.0) * float(torch.erfinv(torch.tensor(2.0 * q - 1.0, dtype=torch.float64)))


def run(args: argparse.Namespace) -> Run:
    """Train the VAE, measure test −ELBO and the k-sample NLL, write metrics and figures.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm vae`` (:func:`add_arguments`): ``k``,
        ``nll_images``, ``max_minutes``, the VAE flags of
        :func:`~latentebm.experiments.vae_runs.add_vae_arguments` and the common ones.

    Returns
    -------
    Run
        The output folder, with the checkpoint, ``metrics.json`` and the figures.
    """
    runs.set_threads(args)
    evaluation = {"k": args.k, "nll_images": args.nll_images,
                  "monitor_every": args.monitor_every, "monitor_images": args.monitor_images,
                  "monitor_k": args.monitor_k, "max_minutes": args.max_minutes}
    # the evaluation settings and the time budget may change on --resume
    run = Run(args.out, runs.vae_config(NAME, args, **evaluation), resume=args.resume,
              resumable=evaluation)
    data = runs.binarized_mnist(args)
    n_test = data["test"].shape[0]
    if args.nll_images is not None and not 1 <= args.nll_images <= n_test:
        raise ValueError(f"--nll-images must be in [1, {n_test}], got {args.nll_images}")
    model = VAE(
        (28, 28),
        args.latent,
        encoder=args.encoder,
        hidden=tuple(runs.mlp_hidden(args)),
        seed=args.seed,
        device=args.device,
    )
    timing = runs.train(
        model,
        data["train"],
        args,
        run.checkpoint,
        validation=data["test"][: args.monitor_images],
        max_minutes=args.max_minutes,
    )
    if not distributed.is_main():  # the model is the same on every rank: rank 0 reports
        return run
    metrics: dict[str, Any] = {**timing, **runs.evaluate(model, data["test"], seed=args.seed)}
    n_nll = n_test if args.nll_images is None else args.nll_images
    subset = torch.randperm(n_test, generator=torch.Generator().manual_seed(args.seed))[:n_nll]
    x_nll = data["test"][subset.sort().values.to(data["test"].device)]
    gen = torch.Generator(device=model.device).manual_seed(args.seed + 1)
    started = time.perf_counter()
    ll = model.log_likelihood(x_nll, k=args.k, generator=gen, progress=not args.quiet)
    nll = ll.summary()
    metrics["nll"] = {**nll, "seconds": time.perf_counter() - started}
    gen_e = torch.Generator(device=model.device).manual_seed(args.seed)
    metrics["neg_elbo_same_images"] = float(-model.elbo(x_nll, generator=gen_e).mean())
    metrics["history"] = model.history_
    written = run.write_metrics(metrics)
    figures(model, run, data, args.seed)
    limit = (f" (of --epochs {args.epochs}: --max-minutes {args.max_minutes:g} stopped it)"
             if metrics["stopped_by_time_limit"] else "")
    print(
        f"vae: {metrics['epochs']} epochs{limit}, {metrics['train_seconds']:.0f} s "
        f"({metrics['images_per_second']:.0f} img/s); test −ELBO {metrics['test_neg_elbo']:.2f}; "
        f"NLL (k={args.k}, {n_nll} digits) {nll['nll']:.2f} ± {nll['se_mc']:.2f} (MC) "
        f"± {nll['se_data']:.2f} (data) nats"
    )
    print(lecture_verdicts(NAME, written))
    return run
