"""Accelerated proximal gradient for ``min_z f(z) + λR(z)`` with a smooth ``f`` given as a
function: the inference of a decoder that is not linear in ``z`` (gradient by autograd), and the
dictionary's kernel step (``f`` the reconstruction error, ``R`` the unit-ball constraint).

Batched: every sample has its own step ``1/L`` (backtracking: ``L`` doubles until
``f(p) ≤ f(x) + ⟨∇f(x), p − x⟩ + (L/2)‖p − x‖²``, and is relaxed by ``shrink`` at each
iteration so it can also fall), its own momentum (FISTA, restarted when the energy would rise:
such a step is rejected), and its own stopping decision: the relative change
``‖z_{k+1} − z_k‖ ≤ tol·‖z_{k+1}‖``. Converged samples leave the working batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .._docs import doc_filler
from ..operators import batch_dot, per_sample
from ..regularizers import Regularizer
from .result import Callback, IterationState, SolverResult

#: ``smooth(rows, z)``: per-sample ``f`` ``(len(rows),)`` of the samples ``rows`` of the batch.
SmoothFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MAX_LIPSCHITZ = 1e30
"""Backtracking stops doubling ``L`` here (the step is then accepted as it is)."""

_fill_doc = doc_filler({
    "z0_start": "z0 : torch.Tensor of shape (batch, *code_dims)\n    Starting point.",
    "reg_R": "reg : Regularizer\n    ``R``, through its ``prox`` and ``value``.",
})


@_fill_doc
class SmoothObjective(Protocol):
    """``f`` per sample: ``value(rows, z)`` ``(len(rows),)`` and ``value_and_grad(rows, z)``
    for the samples ``rows`` of the batch at ``z`` ``(len(rows), *code_dims)``."""

    def value(self, rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``f`` of the samples ``rows`` at ``z``.

        Parameters
        ----------
        {rows_iterates}

        {returns_rows}
        """

    def value_and_grad(self, rows: torch.Tensor, z: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` and its gradient with respect to ``z`` for the samples ``rows``.

        Parameters
        ----------
        {rows_iterates}

        Returns
        -------
        value : torch.Tensor of shape (n,)
        grad : torch.Tensor of shape (n, *code_dims)
        """


@_fill_doc
@dataclass(frozen=True)
class AutogradObjective:
    """A :class:`SmoothObjective` from ``smooth(rows, z)``, gradient by autograd."""

    smooth: SmoothFn

    def value(self, rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``smooth(rows, z)`` without building a graph.

        Parameters
        ----------
        {rows_iterates}

        {returns_rows}
        """
        with torch.no_grad():
            return self.smooth(rows, z).detach()

    def value_and_grad(self, rows: torch.Tensor, z: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``smooth(rows, z)`` and its gradient by autograd (of the sum over samples).

        Parameters
        ----------
        rows : torch.Tensor of shape (n,)
            Indices of the samples in the batch being solved.
        z : torch.Tensor of shape (n, *code_dims)
            Their iterates (detached before differentiation).

        Returns
        -------
        value : torch.Tensor of shape (n,)
            Detached values.
        grad : torch.Tensor of shape (n, *code_dims)
        """
        with torch.enable_grad():
            v = z.detach().requires_grad_(True)
            f = self.smooth(rows, v)
            (g,) = torch.autograd.grad(f.sum(), v)
        return f.detach(), g


@_fill_doc
@dataclass(frozen=True)
class JointObjective:
    """A :class:`SmoothObjective` of one unbatched variable: ``value(V)`` a 0-dim tensor and
    ``value_and_grad(V)`` for ``V`` of any shape, solved as a batch of one ``(1, *V.shape)``."""

    value_fn: Callable[[torch.Tensor], torch.Tensor]
    value_and_grad_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

    def value(self, rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``value_fn`` of the single variable, as a batch of one.

        Parameters
        ----------
        {rows_single}

        Returns
        -------
        torch.Tensor of shape (1,)
        """
        return self.value_fn(z[0]).reshape(1)

    def value_and_grad(self, rows: torch.Tensor, z: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``value_and_grad_fn`` of the single variable, as a batch of one.

        Parameters
        ----------
        {rows_single}

        Returns
        -------
        value : torch.Tensor of shape (1,)
        grad : torch.Tensor of shape (1, *V.shape)
        """
        f, g = self.value_and_grad_fn(z[0])
        return f.reshape(1), g.unsqueeze(0)


def _initial_lipschitz(objective: SmoothObjective, rows, z, g) -> torch.Tensor:
    """Curvature of ``f`` along ``∇f`` by a finite difference: a start for backtracking."""
    tiny = torch.finfo(z.dtype).tiny
    g_norm = batch_dot(g, g).sqrt()
    scale = 1e-3 * torch.clamp(batch_dot(z, z).sqrt(), min=1.0)
    s = g * per_sample(scale / g_norm.clamp_min(tiny), g)
    _, g2 = objective.value_and_grad(rows, z + s)
    d = g2 - g
    L = batch_dot(d, d).sqrt() / batch_dot(s, s).sqrt().clamp_min(tiny)
    L = torch.where(g_norm > 0, L, torch.ones_like(L))
    return torch.nan_to_num(L, nan=1.0, posinf=1.0).clamp_min(1e-8)


@_fill_doc
def smooth_proximal_gradient(
    objective: SmoothObjective,
    z0: torch.Tensor,
    lam: float,
    reg: Regularizer,
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    accelerated: bool = True,
    shrink: float = 0.9,
    lipschitz: torch.Tensor | float | None = None,
    slack: float | None = None,
    callback: Callback | None = None,
) -> SolverResult:
    """Minimise ``f(z) + λR(z)`` per sample from ``z0`` (inputs already validated).

    Parameters
    ----------
    objective : SmoothObjective
        The smooth part ``f``.
    {z0_start}
    {lam_nonneg}
    {reg_R}
    max_iter, tol : int, float
        Iteration cap and relative-change tolerance (``tol = 0``: run ``max_iter`` iterations
        unless no descent is left).
    accelerated : bool
        FISTA momentum with function-value restart, or plain proximal gradient.
    shrink : float
        ``L`` is multiplied by this at each iteration before backtracking.
    lipschitz : tensor, float or None, shape (batch,) or ()
        Starting ``L`` (e.g. the last run's); by default a finite-difference estimate.
    slack : float or None
        Relative slack of the sufficient-decrease test (default ``16·eps``).
    {solver_callback}

    Returns
    -------
    SolverResult
        ``z``, ``energy`` (``f + λR``), ``converged``, iterations, the final ``lipschitz``;
        ``gap`` is NaN (no certificate for a general ``f``).
    """
    batch = z0.shape[0]
    device, dtype = z0.device, z0.dtype
    eps = 16 * torch.finfo(dtype).eps if slack is None else slack
    rows = torch.arange(batch, device=device)
    z = z0.detach().clone()
    f_x, g_x = objective.value_and_grad(rows, z)
    F_z = f_x + lam * reg.value(z)
    if lipschitz is None:
        L = _initial_lipschitz(objective, rows, z, g_x)
    else:
        L = torch.as_tensor(lipschitz, dtype=dtype, device=device).expand(batch).clone()
    x, t = z, torch.ones(batch, dtype=dtype, device=device)
    out_z, out_F, out_L = z.clone(), F_z.clone(), L.clone()
    out_conv = torch.zeros(batch, dtype=torch.bool, device=device)
    out_iter = torch.zeros(batch, dtype=torch.long, device=device)
    for k in range(1, max_iter + 1):
        L = L * shrink
        while True:
            inv_L = per_sample(1.0 / L, x)
            p = reg.prox(x - g_x * inv_L, lam * inv_L)
            f_p = objective.value(rows, p)
            d = p - x
            bound = f_x + batch_dot(g_x, d) + 0.5 * L * batch_dot(d, d)
            # a non-finite f(p) counts as an overshoot: the step is shortened, never taken
            too_long = ~(f_p <= bound + eps * f_x.abs()) & (L <= MAX_LIPSCHITZ)
            if not bool(too_long.any()):
                break
            L = torch.where(too_long, 2 * L, L)
        F_p = f_p + lam * reg.value(p)
        rise = ~(F_p <= F_z)  # a non-finite energy is rejected like a rise
        z_new = torch.where(per_sample(rise, z), z, p)
        step = z_new - z
        moved = batch_dot(step, step).sqrt()
        size = batch_dot(z_new, z_new).sqrt()
        stuck = rise & (t == 1) if accelerated else rise  # no descent left at rounding level
        done = (~rise & (moved <= tol * size)) | stuck
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        beta = ((t - 1) / t_new).masked_fill(rise, 0.0)
        t = t_new.masked_fill(rise, 1.0)
        z, F_z = z_new, torch.where(rise, F_z, F_p)
        x = z + per_sample(beta, z) * step if accelerated else z
        out_z[rows], out_F[rows], out_L[rows] = z, F_z, L
        # a sample stopped because even the shortest step is non-finite has not converged
        out_conv[rows], out_iter[rows] = done & (~rise | torch.isfinite(F_p)), k
        if callback is not None:
            callback(k, IterationState(k, batch, z, rows, energy=F_z))
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = ~done
            rows, z, F_z, x, t, L = rows[keep], z[keep], F_z[keep], x[keep], t[keep], L[keep]
        f_x, g_x = objective.value_and_grad(rows, x)
    out_conv &= torch.isfinite(out_F)
    return SolverResult(
        z=out_z, gap=torch.full_like(out_F, float("nan")), energy=out_F, converged=out_conv,
        n_iter_per_sample=out_iter, n_iter=int(out_iter.max()) if batch else 0,
        method="smooth_proximal_gradient", lipschitz=out_L)


@_fill_doc
def autograd_proximal_gradient(
    smooth: SmoothFn,
    z0: torch.Tensor,
    lam: float,
    reg: Regularizer,
    **options,
) -> SolverResult:
    """:func:`smooth_proximal_gradient` for ``f`` given as a function, differentiated by autograd.

    Parameters
    ----------
    smooth : callable
        ``smooth(rows, z) -> (len(rows),)``: per-sample ``f`` of the samples ``rows`` at
        ``z`` ``(len(rows), *code_dims)``.
    {z0_start}
    {lam_nonneg}
    {reg_R}
    **options
        Keyword options of :func:`smooth_proximal_gradient`.

    Returns
    -------
    SolverResult
        As :func:`smooth_proximal_gradient`.
    """
    return smooth_proximal_gradient(AutogradObjective(smooth), z0, lam, reg, **options)


__all__ = [
    "SmoothFn",
    "SmoothObjective",
    "AutogradObjective",
    "JointObjective",
    "smooth_proximal_gradient",
    "autograd_proximal_gradient",
]
