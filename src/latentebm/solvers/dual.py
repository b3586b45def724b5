"""Dual points for the Lasso-type certificate, for any operator (dense or convolutional).

The dual of ``min_z ½‖y − Az‖² + λR(z)`` is ``max_θ ½‖y‖² − ½‖y − λθ‖²`` subject to
``R°(Aᵀθ) ≤ 1``. Every residual-like signal ``r`` gives a feasible point ``λθ = αr`` with
``0 ≤ α ≤ λ / R°(Aᵀr)``; :func:`scaled_dual_value` picks the best such ``α`` in closed form.
Better residuals give tighter certificates: :class:`DualExtrapolation` combines the last few
residuals of an iterative solver (Massias, Vaiter, Gramfort & Salmon, JMLR 2020), and
:class:`BestDual` keeps the largest dual value seen per sample, so the gap never grows.

Everything is batched (batch first) and works on any representation of the residuals in which
the caller can take inner products (images, vectors, or Fourier half-spectra with Parseval
weights): the caller passes ``dot``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Dot = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``dot(a, b)``: per-sample real inner product ``(batch,)`` of two batch-first tensors."""


def scaled_dual_value(
    sr: torch.Tensor, rr: torch.Tensor, dual_norm: torch.Tensor, lam: float
) -> torch.Tensor:
    """The best dual value along the ray of a residual: ``max_α α⟨y, r⟩ − ½α²‖r‖²`` over
    ``0 ≤ α ≤ λ / R°(Aᵀr)``.

    Parameters
    ----------
    sr : torch.Tensor, shape (batch,)
        ``⟨y, r⟩``.
    rr : torch.Tensor, shape (batch,)
        ``‖r‖²``.
    dual_norm : torch.Tensor, shape (batch,)
        ``R°(Aᵀr)`` (for L1, ``‖Aᵀr‖_∞``).
    lam : float
        λ > 0.

    Returns
    -------
    torch.Tensor, shape (batch,)
        A lower bound on the optimal energy (0 where ``r`` is useless).
    """
    tiny = torch.finfo(rr.dtype).tiny
    cap = lam / dual_norm.clamp_min(tiny)
    alpha = torch.minimum((sr / rr.clamp_min(tiny)).clamp_min(0), cap)
    value = alpha * sr - 0.5 * alpha * alpha * rr
    return torch.where(torch.isfinite(value), value, torch.zeros_like(value)).clamp_min(0)


class DualExtrapolation:
    """The last ``depth + 1`` residuals of a solver and their extrapolated limit.

    With ``U = [r_1 − r_0, …, r_K − r_{K−1}]`` (oldest first) the weights ``c = w / Σw``,
    ``(UᵀU) w = 1``, give ``r_acc = Σ_k c_k r_k``: the limit of a residual sequence that follows
    a linear recursion (ISTA, coordinate descent, ADMM near convergence). A singular system
    (residuals that stopped changing) falls back to the newest residual.

    Parameters
    ----------
    depth : int
        ``K``, the number of differences used (Massias et al. use 5).
    """

    def __init__(self, depth: int = 5) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self.history: list[torch.Tensor] = []

    def push(self, r: torch.Tensor) -> None:
        """Record a residual ``(batch, *dims)`` (the batch must match earlier pushes)."""
        self.history.append(r)
        if len(self.history) > self.depth + 1:
            self.history.pop(0)

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the samples where ``mask`` ``(batch,)`` is true."""
        self.history = [r[mask] for r in self.history]

    def extrapolate(self, dot: Dot) -> torch.Tensor | None:
        """The extrapolated residual ``(batch, *dims)``, or ``None`` before ``depth + 1``
        residuals were pushed."""
        if len(self.history) < self.depth + 1:
            return None
        diffs = [b - a for a, b in zip(self.history[:-1], self.history[1:], strict=True)]
        k = len(diffs)
        gram = torch.stack([torch.stack([dot(diffs[i], diffs[j]) for j in range(k)], -1)
                            for i in range(k)], -2)
        # scale-free ridge: the system is often nearly singular
        ridge = 1e-10 * gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(
            torch.finfo(gram.dtype).tiny)
        gram = gram + ridge[:, None, None] * torch.eye(k, dtype=gram.dtype, device=gram.device)
        w, info = torch.linalg.solve_ex(gram, torch.ones_like(gram[..., 0]))
        total = w.sum(-1, keepdim=True)
        ok = (info == 0)[:, None] & torch.isfinite(w).all(-1, keepdim=True) & (total.abs() > 0)
        newest = torch.zeros_like(w)
        newest[:, -1] = 1
        c = torch.where(ok, w / torch.where(ok, total, torch.ones_like(total)), newest)
        out = torch.zeros_like(self.history[-1])
        shape = (-1, *([1] * (out.dim() - 1)))
        for j in range(k):
            out = out + c[:, j].reshape(shape).to(out.dtype) * self.history[j + 1]
        return out


class BestDual:
    """The largest dual value seen per sample (a gap that never grows).

    Parameters
    ----------
    batch : int
        Number of samples.
    like : torch.Tensor
        Gives the dtype and device.
    """

    def __init__(self, batch: int, like: torch.Tensor) -> None:
        self.value = torch.zeros(batch, dtype=like.dtype, device=like.device)

    def update(self, value: torch.Tensor) -> torch.Tensor:
        """Take the per-sample maximum with ``value`` ``(batch,)``; returns the best values."""
        self.value = torch.maximum(self.value, value)
        return self.value

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the samples where ``mask`` ``(batch,)`` is true."""
        self.value = self.value[mask]


__all__ = ["scaled_dual_value", "DualExtrapolation", "BestDual", "Dot"]
