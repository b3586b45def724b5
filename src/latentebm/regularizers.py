"""Regularizers ``R(z)``: value, proximal operator and the dual norm used by the gap certificate.

Codes are batch-first; ``value`` and ``dual_norm`` reduce every non-batch dimension and return
shape ``(batch,)``. ``prox(v, tau)`` solves ``argmin_z ½‖z − v‖² + tau·R(z)`` with ``tau`` a
float, a 0-dim tensor, or a tensor broadcastable against ``v``.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F


def soft_threshold(v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """``shrink_τ(v) = sign(v)·max(|v| − τ, 0)``, computed as ``v − clip(v, −τ, τ)``.

    A single threshold known on the host (a number, or a 0-dim CPU tensor: reading it costs no
    device synchronisation) and not being learned goes through the fused ``softshrink`` kernel,
    one pass over ``v`` with the same arithmetic; per-sample, learned or accelerator-held
    thresholds through ``clamp`` with tensor bounds (several times slower on CPU).
    """
    if isinstance(tau, torch.Tensor):
        if (tau.dim() == 0 and tau.device.type == "cpu" and not tau.requires_grad
                and v.is_floating_point()):
            return F.softshrink(v, float(tau))
        return v - torch.clamp(v, min=-tau, max=tau)
    return F.softshrink(v, float(tau)) if v.is_floating_point() else \
        v - torch.clamp(v, min=-float(tau), max=float(tau))


class Regularizer(abc.ABC):
    """A convex, positively homogeneous penalty ``R`` (a gauge), so the Lasso-type duality gap
    ``½(1−u)²‖r‖² + λR(z) − u⟨z, Aᵀr⟩`` with ``u = λ / max(λ, R°(Aᵀr))`` certifies optimality,
    where ``R°`` is :meth:`dual_norm`."""

    name: str = "regularizer"

    @abc.abstractmethod
    def value(self, z: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def prox(self, v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor: ...

    @abc.abstractmethod
    def dual_norm(self, c: torch.Tensor) -> torch.Tensor: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class L1(Regularizer):
    """``R(z) = ‖z‖₁``."""

    name = "l1"

    def value(self, z: torch.Tensor) -> torch.Tensor:
        return z.abs().flatten(1).sum(1)

    def prox(self, v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
        return soft_threshold(v, tau)

    def dual_norm(self, c: torch.Tensor) -> torch.Tensor:
        return c.abs().flatten(1).amax(1)


class NonNegL1(Regularizer):
    """``R(z) = Σ z`` on ``z ≥ 0`` (+∞ elsewhere): the non-negative Lasso."""

    name = "nonneg_l1"

    def value(self, z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1).sum(1)

    def prox(self, v: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
        return torch.clamp(v - tau, min=0)

    def dual_norm(self, c: torch.Tensor) -> torch.Tensor:
        return c.flatten(1).amax(1).clamp_min(0)


def get_regularizer(nonneg: bool) -> Regularizer:
    """The L1 penalty, one-sided when ``nonneg``."""
    return NonNegL1() if nonneg else L1()
