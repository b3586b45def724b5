"""Proximal gradient with backtracking for ``min_z f(z) + λR(z)`` with a smooth ``f`` given as
a function (gradient by autograd): the inference of a decoder that is not linear in ``z``.

Batched like :mod:`latentebm.solvers`: every sample has its own step ``1/L`` (backtracking:
``L`` doubles until ``f(p) ≤ f(x) + ⟨∇f(x), p − x⟩ + (L/2)‖p − x‖²``, and is relaxed by
``shrink`` at each iteration so it can also fall), its own momentum (FISTA, restarted when the
energy would rise: such a step is rejected), and its own stopping decision: the relative change
``‖z_{k+1} − z_k‖ ≤ tol·‖z_{k+1}‖``. Converged samples leave the working batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .operators import batch_dot, per_sample
from .regularizers import Regularizer

#: ``smooth(rows, z)``: per-sample ``f`` ``(len(rows),)`` of the samples ``rows`` of the batch.
SmoothFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _value_and_grad(smooth: SmoothFn, rows: torch.Tensor, z: torch.Tensor):
    with torch.enable_grad():
        v = z.detach().requires_grad_(True)
        f = smooth(rows, v)
        (g,) = torch.autograd.grad(f.sum(), v)
    return f.detach(), g


def _initial_lipschitz(smooth: SmoothFn, rows, z, g) -> torch.Tensor:
    """Curvature of ``f`` along ``∇f`` by a finite difference: a start for backtracking."""
    tiny = torch.finfo(z.dtype).tiny
    g_norm = batch_dot(g, g).sqrt()
    scale = 1e-3 * torch.clamp(batch_dot(z, z).sqrt(), min=1.0)
    s = g * per_sample(scale / g_norm.clamp_min(tiny), g)
    _, g2 = _value_and_grad(smooth, rows, z + s)
    d = g2 - g
    L = batch_dot(d, d).sqrt() / batch_dot(s, s).sqrt().clamp_min(tiny)
    L = torch.where(g_norm > 0, L, torch.ones_like(L))
    return torch.nan_to_num(L, nan=1.0, posinf=1.0).clamp_min(1e-8)


def autograd_proximal_gradient(
    smooth: SmoothFn,
    z0: torch.Tensor,
    lam: float,
    reg: Regularizer,
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    accelerated: bool = True,
    shrink: float = 0.9,
) -> dict[str, torch.Tensor]:
    """Minimise ``f(z) + λR(z)`` per sample from ``z0`` ``(batch, *code_dims)``.

    Returns ``z``, ``energy`` (``f + λR`` at ``z``), ``converged`` and ``n_iter`` per sample.
    """
    batch = z0.shape[0]
    device, dtype = z0.device, z0.dtype
    eps = 16 * torch.finfo(dtype).eps
    rows = torch.arange(batch, device=device)
    z = z0.detach().clone()
    f_x, g_x = _value_and_grad(smooth, rows, z)
    F_z = f_x + lam * reg.value(z)
    L = _initial_lipschitz(smooth, rows, z, g_x)
    x, t = z, torch.ones(batch, dtype=dtype, device=device)
    out_z, out_F = z.clone(), F_z.clone()
    out_conv = torch.zeros(batch, dtype=torch.bool, device=device)
    out_iter = torch.zeros(batch, dtype=torch.long, device=device)
    for k in range(1, max_iter + 1):
        L = L * shrink
        while True:
            inv_L = per_sample(1.0 / L, x)
            p = reg.prox(x - g_x * inv_L, lam * inv_L)
            with torch.no_grad():
                f_p = smooth(rows, p).detach()
            d = p - x
            bound = f_x + batch_dot(g_x, d) + 0.5 * L * batch_dot(d, d)
            too_long = f_p > bound + eps * f_x.abs()
            if not bool(too_long.any()):
                break
            L = torch.where(too_long, 2 * L, L)
        F_p = f_p + lam * reg.value(p)
        rise = F_p > F_z
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
        out_z[rows], out_F[rows] = z, F_z
        out_conv[rows], out_iter[rows] = done, k
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = ~done
            rows, z, F_z, x, t, L = rows[keep], z[keep], F_z[keep], x[keep], t[keep], L[keep]
        f_x, g_x = _value_and_grad(smooth, rows, x)
    return {"z": out_z, "energy": out_F, "converged": out_conv, "n_iter": out_iter}


__all__ = ["autograd_proximal_gradient", "SmoothFn"]
