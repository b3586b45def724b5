"""``latentebm psd``: predictive sparse decomposition (Kavukcuoglu, Ranzato & LeCun 2008).

Trains one PSD model per encoder (``g ⊙ tanh(W_e y + b)`` and/or LISTA), then measures on
held-out data how good the encoder's one-pass codes are for the Lasso energy of the learned
decoder, against the optimum found by FISTA.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np
import torch

from .. import viz
from .._docs import fill_doc
from ..models import SparseCoding
from ..models.lista import LISTA
from ..models.psd import ENCODERS, PSD
from ..solvers import fista
from ..training import distributed
from ..viz._figure import new_figure, save_png
from . import lista_eval as ev
from ._args import (
    add_common_arguments,
    add_defaulted_flags,
    command_arguments,
    count_argument,
    non_negative_argument,
    positive_argument,
)
from ._run import Run
from .claims import lecture_verdicts
from .mnist_problems import add_dataset_arguments, open_run

NAME = "psd"
HELP = "predictive sparse decomposition: decoder, fast encoder, encoder-only code quality"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    # 60 000 digits for 10 epochs: the LISTA encoder's one-pass codes come within 3 % of the
    # Lasso optimum's energy; 10 000 for 5 epochs (46 s) left them 16 % above it
    add_common_arguments(parser, epochs=10, lam=0.5)
    add_dataset_arguments(parser, n_train=60000, n_test=2000)
    parser.add_argument("--beta", type=non_negative_argument, default=1.0,
                        help="weight β of the prediction term (β/2)‖z − Enc(y)‖² (default: 1)")
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS),
                        help="encoders to train, one model each (default: tanh lista)")
    add_defaulted_flags(parser, count_argument, [
        ("--steps", 3, "LISTA encoder depth"),
        ("--batch-size", 256, "mini-batch"),
        ("--fista-iters", 1000, "FISTA iterations traced for the comparison"),
    ])
    add_defaulted_flags(parser, positive_argument, [
        ("--lr-decoder", 1.0, "decoder gradient step"),
        ("--lr-encoder", 3e-3, "encoder Adam step"),
    ])


add_arguments = command_arguments(NAME, _add_flags)


def encoder_filters(model: PSD) -> torch.Tensor:
    """The encoder's input filters ``(n_atoms, n_features)``: ``W_e``, or LISTA's first layer.

    Parameters
    ----------
    model : PSD
        A trained model (``tanh`` or LISTA encoder).

    Returns
    -------
    torch.Tensor of shape (n_atoms, n_features)
        The filters, detached.
    """
    enc = model.encoder
    if isinstance(enc, LISTA):
        if enc.variant == "lista":
            return enc.W_e.detach()
        if enc.variant == "cp":
            return enc.V[0].detach().T
        return (enc.gamma[0] * enc.W.T).detach()
    return enc.W_e.detach()


def evaluate(model: PSD, Yt: torch.Tensor, args) -> dict[str, Any]:
    """Encoder-only codes against FISTA's optimum of the Lasso on the learned decoder.

    Parameters
    ----------
    model : PSD
        The trained model.
    Yt : torch.Tensor of shape (n_test, n_features)
        Held-out signals (the first 500 are used for the warm-start report).
    args : argparse.Namespace
        The command's arguments; reads ``fista_iters``.

    Returns
    -------
    dict
        ``lasso_energy_encoder``, ``lasso_energy_optimal``, ``energy_excess``,
        ``per_sample_excess`` (ndarray of shape (n_test,)), ``code_error``,
        ``fista_iterations_same_error``, ``psd_free_energy``, ``warm_start`` (from the
        trained encoder's codes), ``warm_start_untrained`` (from those of
        :func:`untrained_twin`) and ``optimal_nonzeros``.
    """
    W, lam = model.dictionary(), model.lam
    P = model.predict(Yt)
    opt = fista(Yt, W, lam, max_iter=5000)
    E_enc = ev.energies(Yt, W, P, lam)
    E_opt = opt.energy
    err = ev.relative_code_error(P, opt.z)
    trace = ev.solver_trace(Yt, W, lam, opt.z, args.fista_iters, accelerated=True)
    n_cold, _ = ev.iterations_to_gap(Yt[:500], W, lam, tol=1e-4)
    n_warm, _ = ev.iterations_to_gap(Yt[:500], W, lam, tol=1e-4, z0=P[:500])
    n_untrained, _ = ev.iterations_to_gap(Yt[:500], W, lam, tol=1e-4,
                                          z0=untrained_twin(model).predict(Yt[:500]))
    return {
        "lasso_energy_encoder": float(E_enc.mean()),
        "lasso_energy_optimal": float(E_opt.mean()),
        "energy_excess": ev.relative_energy_excess(E_enc, E_opt),
        "per_sample_excess": ((E_enc - E_opt) / E_opt).cpu().numpy(),
        "code_error": err,
        "fista_iterations_same_error": ev.iterations_to_reach(trace, err),
        **_free_energy(model, Yt),
        "warm_start": ev.warm_start_report(n_cold, n_warm),
        "warm_start_untrained": ev.warm_start_report(n_cold, n_untrained),
        "optimal_nonzeros": float((opt.z != 0).sum(1).double().mean()),
    }


def untrained_twin(model: PSD) -> PSD:
    """A PSD of ``model``'s configuration on its learned decoder, the encoder untrained.

    Its encoder is what training starts from, built on the learned atoms: ``tanh(Wᵀy/L)`` (about
    one ISTA step) or the LISTA network's ``K`` ISTA steps. Warm starts from its codes are the
    baseline that the trained encoder's must beat: ISTA steps alone already save iterations.

    Parameters
    ----------
    model : PSD
        A trained model.

    Returns
    -------
    PSD
        On ``model``'s device, in its dtype.
    """
    settings = dataclasses.asdict(model.config) | {"dtype": model.dtype}
    return PSD(**settings, init=model.dictionary(), device=model.device)


@fill_doc
def quality_figure(path, results: dict[str, dict[str, Any]]) -> None:
    """Histogram of the per-sample relative energy excess of the encoder's codes.

    Parameters
    ----------
    {png_path_short}
    results : dict of str to dict
        Per encoder name, the output of :func:`evaluate`.
    """
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for name, r in results.items():
        x = np.clip(r["per_sample_excess"], 1e-6, None)
        ax.hist(x, bins=np.logspace(-4, 1, 60), histtype="step", linewidth=1.5,
                label=f"{name} encoder (mean excess {100 * r['energy_excess']:.1f} %)")
    ax.axvline(0.05, color="k", linestyle="--", linewidth=1, label="5 %")
    ax.set_xscale("log")
    ax.set_xlabel("(E(Enc(y)) − E(z*)) / E(z*), held-out")
    ax.set_ylabel("signals")
    ax.set_title("encoder-only codes against FISTA's optimum")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)


def run(args: argparse.Namespace) -> Run:
    """Train one PSD model per encoder, compare encoder-only codes with FISTA, write metrics.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed flags of ``latentebm psd`` (:func:`add_arguments`): ``beta``,
        ``encoders``, ``steps``, ``batch_size``, ``lr_decoder``, ``lr_encoder``,
        ``fista_iters``, those of
        :func:`~latentebm.experiments.mnist_problems.add_dataset_arguments` and the common
        ones.

    Returns
    -------
    Run
        The output folder, with the checkpoints, ``metrics.json`` and the figures.
    """
    out, Y, Yt, image_shape = open_run(args)
    device = Y.device
    init: Any = "data"
    if args.dictionary:
        sc = SparseCoding.load(args.dictionary, device=device)
        if sc.n_features != Y.shape[1] or sc.n_atoms != args.atoms:
            raise ValueError(
                f"--dictionary holds {sc.n_atoms} atoms of {sc.n_features} features; the run "
                f"needs {args.atoms} atoms of {Y.shape[1]}"
            )
        init = sc.dictionary()
    models = {}
    for name in args.encoders:  # under torchrun every rank trains, then rank 0 reports
        models[name] = model = PSD(Y.shape[1], args.atoms, args.lam, args.beta, encoder=name,
                                   n_steps=args.steps, init=init, seed=args.seed, device=device)
        model.fit(Y, epochs=args.epochs, batch_size=args.batch_size,
                  lr_decoder=args.lr_decoder, lr_encoder=args.lr_encoder,
                  checkpoint=out.path(f"psd_{name}.safetensors"), resume=args.resume,
                  progress=not args.quiet)
    if not distributed.is_main():  # the models are the same on every rank
        return out
    results, curves_energy = {}, {}
    for name, model in models.items():
        results[name] = evaluate(model, Yt, args)
        epochs = np.array([h["epoch"] + 1 for h in model.history_])
        curves_energy[f"{name}: PSD energy at z"] = (
            epochs, np.array([h["energy"] for h in model.history_]))
        curves_energy[f"{name}: Lasso energy of Enc(y)"] = (
            epochs, np.array([h["lasso_energy_encoder"] for h in model.history_]))
        shape = (args.atoms, 1, *image_shape)
        viz.filter_bank_pair(
            encoder_filters(model).reshape(shape).cpu().numpy(),
            model.dictionary().T.reshape(shape).cpu().numpy(),
            out.path(f"filters_{name}.png"), titles=(f"encoder ({name})", "decoder W"),
        )
        results[name]["history"] = model.history_
    viz.convergence_curves(curves_energy, out.path("energy_curves.png"), xlabel="epoch",
                           ylabel="mean energy (training batches)", logy=False,
                           title=f"PSD, λ = {args.lam:g}, β = {args.beta:g}")
    quality_figure(out.path("code_quality.png"), results)
    summary = {name: {k: v for k, v in r.items() if k != "per_sample_excess"}
               for name, r in results.items()}
    written = out.write_metrics({"encoders": summary, "seconds": out.elapsed()})
    for name, r in summary.items():
        print(f"{name}: encoder-only Lasso energy {r['lasso_energy_encoder']:.4g} vs optimum "
              f"{r['lasso_energy_optimal']:.4g} (excess {100 * r['energy_excess']:.2f} %), "
              f"code error {r['code_error']:.3g}")
    print(lecture_verdicts(NAME, written))
    return out


def _free_energy(model: PSD, Y: torch.Tensor) -> dict[str, float]:
    """The mean PSD free energy of ``Y`` and the share of samples whose minimisation was
    certified (recorded, where ``free_energy`` would warn about the others)."""
    result = model.infer(Y)
    return {"psd_free_energy": float(result.energy.mean()),
            "psd_free_energy_converged_share": float(result.converged.double().mean())}
