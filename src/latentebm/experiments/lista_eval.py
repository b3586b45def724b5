"""Measuring learned encoders against ISTA and FISTA on held-out data.

Everything here compares codes ``Z`` ``(batch, n_atoms)`` with the optimal codes ``Z*`` of the
energy ``½‖y − Wz‖² + λ‖z‖₁``: relative code error ``Σ‖z − z*‖² / Σ‖z*‖²`` (sums over the
batch), relative energy excess ``(ΣE(z) − ΣE(z*)) / ΣE(z*)``, the iterations ISTA or FISTA
need from zero to do as well, codes per second, and iterations saved by warm-starting FISTA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._docs import doc_filler
from ..operators import DenseDictionary
from ..solvers import IterationState, fista, ista

fill_doc = doc_filler({
    "lasso_YWlam": ("Y : torch.Tensor of shape (batch, n_features)\n    Signals.\n"
                    "W : torch.Tensor of shape (n_features, n_atoms)\n    Dictionary.\n"
                    "lam : float\n    λ of the L1 penalty."),
    "optimal_codes": "Z_star : torch.Tensor of shape (batch, n_atoms)\n    Optimal codes.",
    "nonneg_codes": "nonneg : bool\n    Constrain the codes to be non-negative.",
})


@fill_doc
def relative_code_error(Z: torch.Tensor, Z_star: torch.Tensor) -> float:
    """``Σ‖z − z*‖² / Σ‖z*‖²`` over the batch.

    Parameters
    ----------
    Z : torch.Tensor of shape (batch, n_atoms)
        Codes to judge.
    {optimal_codes}

    Returns
    -------
    float
        The relative squared error.
    """
    return float((Z - Z_star).pow(2).sum() / Z_star.pow(2).sum().clamp_min(1e-300))


@fill_doc
def energies(Y: torch.Tensor, W: torch.Tensor, Z: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-sample ``½‖y − Wz‖² + λ‖z‖₁``.

    Parameters
    ----------
    {lasso_YWlam}
    Z : torch.Tensor of shape (batch, n_atoms)
        Codes.

    Returns
    -------
    torch.Tensor of shape (batch,)
        The energies.
    """
    r = Y - Z @ W.T
    return 0.5 * r.pow(2).sum(1) + lam * Z.abs().sum(1)


def relative_energy_excess(E: torch.Tensor, E_star: torch.Tensor) -> float:
    """``(ΣE − ΣE*) / ΣE*``.

    Parameters
    ----------
    E : torch.Tensor of shape (batch,)
        Energies of the codes to judge.
    E_star : torch.Tensor of shape (batch,)
        Energies of the optimal codes.

    Returns
    -------
    float
        The relative excess of the summed energy.
    """
    return float((E.sum() - E_star.sum()) / E_star.sum())


@fill_doc
def solver_trace(
    Y: torch.Tensor,
    W: torch.Tensor,
    lam: float,
    Z_star: torch.Tensor,
    n_iter: int,
    *,
    accelerated: bool,
    nonneg: bool = False,
    lipschitz: float | None = None,
) -> np.ndarray:
    """Relative code error after each of ``n_iter`` iterations of textbook ISTA or FISTA
    (Beck & Teboulle: fixed step ``1/L``, no restart, no finish) from zero: shape ``(n_iter,)``.

    The library's own :func:`~latentebm.fista` / :func:`~latentebm.ista` run, and their
    per-iteration callback measures every iterate in one pass.

    Parameters
    ----------
    {lasso_YWlam}
    {optimal_codes}
    n_iter : int
        Number of iterations.
    accelerated : bool
        FISTA if true, ISTA otherwise.
    {nonneg_codes}
    lipschitz : float or None
        Lipschitz constant ``L`` of the gradient (``‖W‖₂²``); computed when ``None``.

    Returns
    -------
    ndarray of shape (n_iter,)
        float64 relative code error after iterations ``1..n_iter``.
    """
    if lipschitz is None:
        lipschitz = float(DenseDictionary(W).lipschitz((W.shape[0],)))
    ref = Z_star.pow(2).sum()
    errors = torch.empty(n_iter, dtype=torch.float64, device=Y.device)

    def record(iteration: int, state: IterationState) -> None:
        errors[iteration - 1] = (state.z - Z_star[state.active]).pow(2).sum() / ref

    solver = fista if accelerated else ista
    options = {"restart": False} if accelerated else {}
    solver(Y, W, lam, max_iter=n_iter, tol=0.0, nonneg=nonneg, lipschitz=lipschitz,
           backtracking=False, polish=False, check_every=n_iter, callback=record, **options)
    return errors.cpu().numpy()


@fill_doc
def library_fista_trace(
    Y: torch.Tensor,
    W: torch.Tensor,
    lam: float,
    Z_star: torch.Tensor,
    iterations: Sequence[int],
    *,
    nonneg: bool = False,
) -> np.ndarray:
    """Relative code error of the library's default FISTA (adaptive steps and restart, finish)
    stopped after each count in ``iterations`` (one solver run per count).

    Parameters
    ----------
    {lasso_YWlam}
    {optimal_codes}
    iterations : sequence of int
        Iteration counts, one run each.
    {nonneg_codes}

    Returns
    -------
    ndarray of shape (len(iterations),)
        Relative code error of each run.
    """
    errors = []
    for k in iterations:
        out = fista(Y, W, lam, max_iter=int(k), tol=0.0, nonneg=nonneg)
        errors.append(relative_code_error(out.z, Z_star))
    return np.asarray(errors)


def iterations_to_reach(errors: np.ndarray, target: float,
                        iterations: Sequence[int] | None = None) -> int | None:
    """The first iteration count whose error is at most ``target`` (``None`` if none is).

    Parameters
    ----------
    errors : array_like of shape (n,)
        Error after each iteration count.
    target : float
        Error to reach.
    iterations : sequence of int of length n, or None
        The count ``errors[i]`` belongs to (default ``i + 1``).

    Returns
    -------
    int or None
        The first count with ``errors <= target``, or ``None``.
    """
    hits = np.flatnonzero(np.asarray(errors) <= target)
    if hits.size == 0:
        return None
    its = np.arange(1, len(errors) + 1) if iterations is None else np.asarray(iterations)
    return int(its[hits[0]])


MIN_TIMED_SECONDS = 0.05
"""Each timing repeats the call until this long has passed: a single call of well under a
millisecond (50 samples) gave speeds that moved by 20x between identical runs."""


def codes_per_second(encode: Callable[[], Any], n_samples: int, *, repeats: int = 3) -> float:
    """Samples per second of ``encode()``: the best of ``repeats`` timings after a warm-up,
    each over as many calls as fill :data:`MIN_TIMED_SECONDS`.

    Parameters
    ----------
    encode : callable
        Encodes the whole batch when called with no arguments.
    n_samples : int
        Samples encoded per call.
    repeats : int
        Timings.

    Returns
    -------
    float
        ``n_samples`` divided by the fastest timing's seconds per call.
    """
    encode()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            encode()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_TIMED_SECONDS:
                break
        best = min(best, elapsed / calls)
    return n_samples / best


@fill_doc
def fista_fixed(Y: torch.Tensor, W: torch.Tensor, lam: float, n_iter: int, *, plain: bool,
                nonneg: bool = False) -> torch.Tensor:
    """Exactly ``n_iter`` FISTA iterations from zero (``plain``: the textbook method with the
    fixed step ``1/L``, no restart, no polish, a single gap evaluation at the end), as a user
    would run to reach a known error.

    Parameters
    ----------
    {lasso_YWlam}
    n_iter : int
        Number of iterations.
    plain : bool
        Textbook FISTA (fixed step, no restart, no polish) instead of the library's default.
    {nonneg_codes}

    Returns
    -------
    torch.Tensor of shape (batch, n_atoms)
        The codes after ``n_iter`` iterations.
    """
    if plain:
        return fista(Y, W, lam, max_iter=n_iter, tol=0.0, restart=False, polish=False,
                     backtracking=False, check_every=n_iter, nonneg=nonneg).z
    return fista(Y, W, lam, max_iter=n_iter, tol=0.0, nonneg=nonneg).z


@fill_doc
def ista_fixed(Y: torch.Tensor, W: torch.Tensor, lam: float, n_iter: int,
               nonneg: bool = False) -> torch.Tensor:
    """Exactly ``n_iter`` ISTA iterations from zero.

    Parameters
    ----------
    {lasso_YWlam}
    n_iter : int
        Number of iterations.
    {nonneg_codes}

    Returns
    -------
    torch.Tensor of shape (batch, n_atoms)
        The codes after ``n_iter`` iterations.
    """
    return ista(Y, W, lam, max_iter=n_iter, tol=0.0, check_every=n_iter, nonneg=nonneg).z


@fill_doc
def iterations_to_gap(
    Y: torch.Tensor,
    W: torch.Tensor,
    lam: float,
    *,
    tol: float,
    z0: torch.Tensor | None = None,
    max_iter: int = 5000,
    nonneg: bool = False,
) -> tuple[torch.Tensor, bool]:
    """Per-sample iterations the library's FISTA (gap checked every iteration) needs to reach a
    relative duality gap ``tol`` from ``z0`` (zero by default), and whether all got there.

    Parameters
    ----------
    {lasso_YWlam}
    tol : float
        Relative duality gap to reach.
    z0 : torch.Tensor of shape (batch, n_atoms) or None
        Warm start (zero when ``None``).
    max_iter : int
        Iteration cap.
    {nonneg_codes}

    Returns
    -------
    n_iter : torch.Tensor of shape (batch,)
        Iterations each sample needed.
    all_converged : bool
        Whether every sample reached ``tol`` within ``max_iter``.
    """
    out = fista(Y, W, lam, tol=tol, max_iter=max_iter, check_every=1, z0=z0, nonneg=nonneg)
    return out.n_iter_per_sample, out.all_converged


def warm_start_report(n_cold: torch.Tensor, n_warm: torch.Tensor) -> dict[str, float]:
    """Mean iterations from zero and from the warm start, the mean saving, the saved fraction
    and how many samples needed more iterations when warm-started.

    Parameters
    ----------
    n_cold : torch.Tensor of shape (batch,)
        Iterations from zero.
    n_warm : torch.Tensor of shape (batch,)
        Iterations from the warm start.

    Returns
    -------
    dict
        ``cold_mean``, ``warm_mean``, ``saved_mean``, ``saved_fraction`` and
        ``worse_samples`` (an int).
    """
    cold, warm = n_cold.double(), n_warm.double()
    return {
        "cold_mean": float(cold.mean()),
        "warm_mean": float(warm.mean()),
        "saved_mean": float((cold - warm).mean()),
        "saved_fraction": float(1 - warm.sum() / cold.sum()),
        "worse_samples": int((warm > cold).sum()),
    }


__all__ = [
    "relative_code_error",
    "energies",
    "relative_energy_excess",
    "solver_trace",
    "library_fista_trace",
    "iterations_to_reach",
    "codes_per_second",
    "fista_fixed",
    "ista_fixed",
    "iterations_to_gap",
    "warm_start_report",
]
