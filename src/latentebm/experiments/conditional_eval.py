"""Held-out measures of a conditional energy ``F(x, y) = min_z E(x, y, z)``: ranking of the true
``y`` among candidates, and best-of-N completions from sampled latents against ``z = 0``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._docs import fill_doc
from ..energy import LatentVariableEBM
from ..viz._figure import new_figure, save_png


def candidate_indices(n: int, n_candidates: int, seed: int) -> torch.Tensor:
    """``(n, n_candidates)``: column 0 is ``i``, the others distinct random ``j ≠ i``.

    Parameters
    ----------
    n : int
        Number of held-out pairs.
    n_candidates : int
        Candidates per row, the true one included (``2 <= n_candidates <= n``).
    seed : int
        Seed of the draw.

    Returns
    -------
    torch.Tensor of shape (n, n_candidates)
        Long indices into the held-out pairs.
    """
    if not 2 <= n_candidates <= n:
        raise ValueError(f"candidates must be between 2 and the number of test pairs ({n}), "
                         f"got {n_candidates}")
    gen = torch.Generator().manual_seed(seed)
    shifts = torch.stack([torch.randperm(n - 1, generator=gen)[: n_candidates - 1] + 1
                          for _ in range(n)])
    rows = torch.arange(n)[:, None]
    return torch.cat([rows, (rows + shifts) % n], 1)


def ranking(model: LatentVariableEBM, X: torch.Tensor, Y: torch.Tensor, *, n_candidates: int,
            seed: int, tol: float, max_iter: int, chunk: int = 2000) -> dict[str, Any]:
    """Free energies ``F(x_i, y_j)`` of each ``x_i`` with its true ``y_i`` and ``n_candidates − 1``
    other held-out ``y_j``. pairwise: share of ``(i, j)`` with ``F(x_i, y_i) < F(x_i, y_j)``
    (ties count one half); top1: share of ``i`` whose true ``y_i`` has the lowest ``F`` (ties
    shared).

    Parameters
    ----------
    model : LatentVariableEBM
        The trained model.
    X : torch.Tensor of shape (n, d_x)
        Held-out inputs.
    Y : torch.Tensor of shape (n, d_y)
        Their true outputs (the candidates are drawn from these).
    n_candidates : int
        Candidates per input, the true one included.
    seed : int
        Seed of the candidate draw.
    tol, max_iter : float, int
        Stopping rule of the latent inference behind ``F``.
    chunk : int
        Pairs per free-energy call.

    Returns
    -------
    dict
        ``pairwise_ranking``, ``top1_accuracy``, ``n_candidates``, ``n_queries``,
        ``mean_free_energy_true``, ``mean_free_energy_others``, and the raw energies
        ``_true`` (ndarray of shape (n,)) and ``_others`` (ndarray of shape
        (n * (n_candidates - 1),)).
    """
    cand = candidate_indices(X.shape[0], n_candidates, seed).to(X.device)
    xs = X.repeat_interleave(n_candidates, 0)
    ys = Y[cand.flatten()]
    F = torch.cat([model.free_energy(xs[i : i + chunk], ys[i : i + chunk], tol=tol,
                                     max_iter=max_iter)
                   for i in range(0, xs.shape[0], chunk)]).reshape(cand.shape)
    true, others = F[:, :1], F[:, 1:]
    pairwise = ((others > true).double() + 0.5 * (others == true).double()).mean()
    ties = (others == true).sum(1)
    top1 = torch.where((others >= true).all(1), 1.0 / (1 + ties.double()), 0.0).mean()
    return {
        "pairwise_ranking": float(pairwise),
        "top1_accuracy": float(top1),
        "n_candidates": n_candidates,
        "n_queries": int(X.shape[0]),
        "mean_free_energy_true": float(true.mean()),
        "mean_free_energy_others": float(others.mean()),
        "_true": true.flatten().cpu().numpy(),
        "_others": others.flatten().cpu().numpy(),
    }


def neighbour_latents(X: torch.Tensor, X_bank: torch.Tensor, Z_bank: torch.Tensor,
                      n: int) -> torch.Tensor:
    """Latents of the ``n`` bank pairs whose ``x`` is nearest each ``X`` row: a sample of
    ``p(z | x)`` from the codes of similar training inputs.

    Parameters
    ----------
    X : torch.Tensor of shape (batch, d_x)
        Query inputs.
    X_bank : torch.Tensor of shape (n_bank, d_x)
        Bank inputs.
    Z_bank : torch.Tensor of shape (n_bank, *code)
        Their inferred latents.
    n : int
        Neighbours per query (at most ``n_bank``).

    Returns
    -------
    torch.Tensor of shape (batch, n, *code)
        The latents of each query's nearest bank inputs (Euclidean), nearest first.
    """
    d = torch.cdist(X, X_bank)
    idx = d.topk(n, dim=1, largest=False).indices
    return Z_bank[idx]


def best_of_n(model: LatentVariableEBM, X: torch.Tensor, Y: torch.Tensor,
              latents: torch.Tensor) -> dict[str, Any]:
    """Per-pixel squared error of the best of the ``N`` predictions ``Dec(Pred(x), z_k)`` against
    the ``z = 0`` prediction.

    Parameters
    ----------
    model : LatentVariableEBM
        The trained model.
    X : torch.Tensor of shape (batch, d_x)
        Inputs.
    Y : torch.Tensor of shape (batch, d_y)
        True outputs.
    latents : torch.Tensor of shape (batch, N, *code)
        Latents to decode for each input.

    Returns
    -------
    dict
        ``n_latents``, ``best_of_n_mse``, ``mean_of_n_mse``, ``z0_mse`` and
        ``share_best_of_n_better_than_z0``.
    """
    batch, n = latents.shape[:2]
    preds = model.predict(X.repeat_interleave(n, 0), latents.flatten(0, 1))
    err = (preds.reshape(batch, n, -1) - Y.reshape(batch, 1, -1)).pow(2).mean(2)
    zero = model.predict(X, torch.zeros_like(latents[:, 0]))
    err0 = (zero - Y).pow(2).flatten(1).mean(1)
    best = err.min(1).values
    return {
        "n_latents": n,
        "best_of_n_mse": float(best.mean()),
        "mean_of_n_mse": float(err.mean()),
        "z0_mse": float(err0.mean()),
        "share_best_of_n_better_than_z0": float((best < err0).double().mean()),
    }


@fill_doc
def ranking_figure(path, results: dict[str, dict[str, Any]]) -> None:
    """One panel per model: histograms of ``F(x_i, y_i)`` and ``F(x_i, y_j)``, ``j ≠ i``.

    Parameters
    ----------
    {png_path_short}
    results : dict of str to dict
        Per model label, the output of :func:`ranking` (with ``_true`` and ``_others``).
    """
    fig = new_figure(5.2 * len(results), 4.2)
    for k, (label, r) in enumerate(results.items()):
        ax = fig.add_subplot(1, len(results), k + 1)
        both = np.concatenate([r["_true"], r["_others"]])
        hi = float(np.quantile(both, 0.995)) if both.size else 1.0
        lo = float(both.min())
        bins = np.linspace(lo, max(hi, lo + 1e-12), 60)
        ax.hist(np.clip(r["_others"], lo, hi), bins=bins, density=True, alpha=0.6,
                label="other digits' bottoms")
        ax.hist(np.clip(r["_true"], lo, hi), bins=bins, density=True, alpha=0.6,
                label="true bottom")
        ax.set_xlabel("free energy F(x, y)")
        ax.set_ylabel("density")
        ax.set_title(f"{label}: ranking {100 * r['pairwise_ranking']:.1f} %, "
                     f"top-1 {100 * r['top1_accuracy']:.1f} %", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


__all__ = ["candidate_indices", "ranking", "neighbour_latents", "best_of_n", "ranking_figure"]
