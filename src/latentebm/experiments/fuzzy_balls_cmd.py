"""``latentebm vae-fuzzy-balls``: the KL term as a spring on noisy codes.

For each β, a VAE with a 2-D code is trained on dynamically binarised MNIST and the posteriors
of test digits are drawn as ellipses (centre μ, half-axes σ) with the prior's unit circle.
Without the spring (β = 0) the balls fly apart and shrink; at β = 1 they cluster by digit near
the origin; a strong spring (large β) collapses them onto the prior (KL → 0, σ → 1). A second
figure compares a fixed ball size (σ = ``--fixed-sigma``) with a learned one.
"""

from __future__ import annotations

import argparse
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
    non_negative_argument,
    positive_argument,
)
from ._run import Run
from .claims import lecture_verdicts

NAME = "vae-fuzzy-balls"
HELP = "VAE codes as fuzzy balls: posterior ellipses and code statistics for several β"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    runs.add_vae_arguments(parser, epochs=10, latent=2)
    parser.add_argument(
        "--betas",
        type=non_negative_argument,
        nargs="+",
        default=[0.0, 0.1, 1.0, 4.0, 16.0],
        help="KL weights β to compare (default: 0 0.1 1 4 16)",
    )
    add_defaulted_flags(parser, count_argument,
                        [("--n-plot", 500, "test digits drawn as ellipses")])
    parser.add_argument(
        "--fixed-sigma",
        type=positive_argument,
        default=1.0,
        help="posterior σ of the fixed-size model (default: 1)",
    )
    parser.add_argument(
        "--sigma-beta",
        type=non_negative_argument,
        default=1.0,
        help="β of the fixed- versus learned-σ comparison (default: 1)",
    )


add_arguments = command_arguments(NAME, _add_flags)


def _tag(beta: float) -> str:
    return f"beta_{beta:g}"


def _train(run: Run, name: str, model: VAE, data: dict[str, Any], plot_x: torch.Tensor,
           args) -> dict[str, Any]:
    """Train (resumable, in ``run.out / name``) recording E‖μ‖² and mean σ of the plotted
    digits after every epoch; return the timing."""

    def record(m: VAE, entry: dict[str, Any]) -> None:
        mu, logvar = m.posterior(plot_x)
        entry["plot_e_mu_sq"] = float(mu.square().sum(1).mean())
        entry["plot_mean_sigma"] = float(torch.exp(0.5 * logvar).mean())

    return runs.train(  # run.path: the summary's "wrote:" lists each model's checkpoint
        model, data["train"], args, run.path(f"{name}/checkpoint.safetensors"),
        on_epoch_end=record
    )


def _report(run: Run, name: str, model: VAE, timing: dict[str, Any], data: dict[str, Any],
            args) -> dict[str, Any]:
    """Write and return a trained model's test metrics."""
    metrics = {
        "beta": model.beta,
        "learn_variance": model.learn_variance,
        **timing,
        **runs.evaluate(model, data["test"], seed=args.seed),
        "history": model.history_,
    }
    run.write_metrics(metrics, f"{name}/metrics.json")
    return metrics


def run(args: argparse.Namespace) -> Run:
    """Train one 2-D VAE per β and a fixed-σ one, draw the posteriors, write metrics.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm vae-fuzzy-balls`` (:func:`add_arguments`): ``betas``,
        ``n_plot``, ``fixed_sigma``, ``sigma_beta``, the VAE flags of
        :func:`~latentebm.experiments.vae_runs.add_vae_arguments` (``latent`` must be 2) and
        the common ones.

    Returns
    -------
    Run
        The output folder, with one sub-folder per model, ``metrics.json`` and the figures.
    """
    runs.set_threads(args)
    if args.latent != 2:
        raise ValueError(f"--latent must be 2 to draw the codes as ellipses, got {args.latent}")
    seen: dict[str, float] = {}
    for beta in dict.fromkeys([*args.betas, args.sigma_beta]):
        other = seen.setdefault(_tag(beta), beta)
        if other != beta:  # one folder, one checkpoint, for two models
            raise ValueError(f"β {other!r} and {beta!r} (--betas, --sigma-beta) would share the "
                             f"folder {_tag(beta)}; give values that differ in six significant "
                             "digits")
    config = runs.vae_config(NAME, args, betas=args.betas, n_plot=args.n_plot,
                             fixed_sigma=args.fixed_sigma, sigma_beta=args.sigma_beta)
    run = Run(args.out, config, resume=args.resume)
    data = runs.binarized_mnist(args)
    n_test = data["test"].shape[0]
    if not 1 <= args.n_plot <= n_test:
        raise ValueError(f"--n-plot must be in [1, {n_test}], got {args.n_plot}")
    pick = torch.randperm(n_test, generator=torch.Generator().manual_seed(args.seed))
    pick = pick[: args.n_plot]
    plot_x = data["test"][pick.to(data["test"].device)]
    plot_labels = np.asarray(data["labels"])[pick.numpy()]

    def make(beta: float, learn_variance: bool = True) -> VAE:
        return VAE(
            (28, 28),
            args.latent,
            encoder=args.encoder,
            hidden=tuple(runs.mlp_hidden(args)),
            beta=beta,
            learn_variance=learn_variance,
            fixed_sigma=args.fixed_sigma,
            seed=args.seed,
            device=args.device,
        )

    learned_tags = [_tag(b) for b in dict.fromkeys([*args.betas, args.sigma_beta])]
    fixed_tag = f"fixed_sigma_{_tag(args.sigma_beta)}"
    models = {_tag(b): make(b) for b in dict.fromkeys([*args.betas, args.sigma_beta])}
    models[fixed_tag] = make(args.sigma_beta, learn_variance=False)
    # under torchrun every rank trains every model, then rank 0 alone evaluates and draws
    timings = {tag: _train(run, tag, model, data, plot_x, args) for tag, model in models.items()}
    if not distributed.is_main():
        return run
    metrics = {tag: _report(run, tag, models[tag], timings[tag], data, args)
               for tag in (*learned_tags, fixed_tag)}
    panels: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    summary: dict[str, Any] = {}
    histories: dict[float, list[dict[str, Any]]] = {}
    for beta in args.betas:
        model, m = models[_tag(beta)], metrics[_tag(beta)]
        histories[beta] = m["history"]
        summary[_tag(beta)] = {k: v for k, v in m.items() if k != "history"}
        mu, logvar = model.posterior(plot_x)
        sigma = torch.exp(0.5 * logvar)
        title = (
            f"β = {beta:g}: E‖μ‖² = {m['e_mu_sq']:.3g}, mean σ = "
            f"{float(sigma.mean()):.2g}, KL = {m['kl']:.2f}"
        )
        viz_vae.posterior_ellipses(
            mu.cpu(), sigma.cpu(), plot_labels, run.path(f"{_tag(beta)}/posterior.png"), title=title
        )
        panels[title.replace(": ", "\n", 1)] = (mu.cpu(), sigma.cpu())
    viz_vae.posterior_panels(
        panels,
        plot_labels,
        run.path("posterior_all_betas.png"),
        suptitle=f"posteriors of {args.n_plot} test digits; dashed: prior's unit circle",
    )
    _codes_over_training(run, histories)

    learned, m_learned = models[_tag(args.sigma_beta)], metrics[_tag(args.sigma_beta)]
    fixed, m_fixed = models[fixed_tag], metrics[fixed_tag]
    # the learned-σ model at --sigma-beta, trained for the comparison even when not in --betas
    summary.setdefault(_tag(args.sigma_beta),
                       {k: v for k, v in m_learned.items() if k != "history"})
    summary[fixed_tag] = {k: v for k, v in m_fixed.items() if k != "history"}
    compare = {}
    for label, model, m in (
        ("learned σ", learned, m_learned),
        (f"fixed σ = {args.fixed_sigma:g}", fixed, m_fixed),
    ):
        mu, logvar = model.posterior(plot_x)
        title = f"{label}\ntest −ELBO {m['test_neg_elbo']:.1f}, KL {m['kl']:.2f}"
        compare[title] = (mu.cpu(), torch.exp(0.5 * logvar).cpu())
    viz_vae.posterior_panels(
        compare,
        plot_labels,
        run.path("fixed_vs_learned_sigma.png"),
        suptitle=f"β = {args.sigma_beta:g}: ball size fixed or learned",
    )
    written = run.write_metrics(summary)
    for tag, m in summary.items():
        print(
            f"{tag:>22}: E‖μ‖² {m['e_mu_sq']:9.3g}  mean σ {np.round(m['mean_sigma_per_dim'], 3)}"
            f"  KL {m['kl']:7.3f}  active {m['active_units']}  −ELBO {m['test_neg_elbo']:.2f}"
        )
    print(lecture_verdicts("fuzzy-balls", written))
    return run


def _codes_over_training(run: Run, histories: dict[float, list[dict[str, Any]]]) -> None:
    """E‖μ‖², mean σ and their ratio for the plotted digits after each epoch, one line per β."""
    curves: dict[str, dict[str, tuple[list, list]]] = {"norm": {}, "sigma": {}, "ratio": {}}
    for beta, hist in histories.items():
        epochs = [h["epoch"] + 1 for h in hist]
        norm = [h["plot_e_mu_sq"] for h in hist]
        sigma = [h["plot_mean_sigma"] for h in hist]
        label = f"β = {beta:g}"
        curves["norm"][label] = (epochs, norm)
        curves["sigma"][label] = (epochs, sigma)
        curves["ratio"][label] = (epochs, [n / s**2 for n, s in zip(norm, sigma, strict=True)])
    panels = {
        "norm": ("e_mu_sq_per_epoch.png", "E‖μ‖² (plotted test digits)",
                 "squared code norm during training"),
        "sigma": ("sigma_per_epoch.png", "mean σ (plotted test digits)",
                  "ball size during training"),
        "ratio": ("separation_per_epoch.png", "E‖μ‖² / (mean σ)²",
                  "how far apart the balls are, relative to their size"),
    }
    for key, (filename, ylabel, title) in panels.items():
        viz_vae.training_curves(curves[key], run.path(filename), ylabel=ylabel, title=title,
                                logy=True)
