"""The Lasso energy ``½‖y − Az‖² + λR(z)`` and its duality-gap certificate, per sample."""

from __future__ import annotations

from typing import Any

import torch

from .operators import LinearOperator, batch_dot
from .problem import prepare, prepare_code, to_output
from .regularizers import Regularizer, get_regularizer


def energy_and_gap(
    op: LinearOperator, Y: torch.Tensor, z: torch.Tensor, lam: float, reg: Regularizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """Primal energy ``P(z)`` and duality gap ``P(z) − D(θ) ≥ P(z) − P*``, both ``(batch,)``.

    With ``r = y − Az``, ``c = Aᵀr`` and the dual point ``θ = r / max(λ, R°(c))``:
    ``gap = ½(1−u)²‖r‖² + λR(z) − u⟨z, c⟩`` where ``u = λ / max(λ, R°(c))``. This form avoids the
    cancellation of subtracting two nearly equal energies, so float32 certifies small gaps.
    """
    r = Y - op.decode(z)
    return energy_and_gap_from(batch_dot(r, r), op.adjoint(r), z, lam, reg)


def energy_and_gap_from(
    rr: torch.Tensor, c: torch.Tensor, z: torch.Tensor, lam: float, reg: Regularizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`energy_and_gap` from ``‖r‖²`` ``(batch,)`` and ``c = Aᵀr`` (codes' shape), for
    callers that hold them already (a solver that keeps ``AᵀAz`` has ``Aᵀr = Aᵀy − AᵀAz``)."""
    reg_value = reg.value(z)
    primal = 0.5 * rr + lam * reg_value
    scale = torch.clamp(reg.dual_norm(c), min=lam)
    u = torch.where(scale > 0, lam / scale.clamp_min(torch.finfo(scale.dtype).tiny), 1.0)
    gap = 0.5 * (1 - u) ** 2 * rr + lam * reg_value - u * batch_dot(z, c)
    return primal, gap.clamp_min(0)


def lasso_energy(Y: Any, W: Any, Z: Any, lam: Any, *, nonneg: bool = False) -> Any:
    """Per-sample ``½‖y − Wz‖² + λ‖z‖₁``, shape ``(batch,)``.

    ``Y`` is ``(batch, n_features)`` (or images for a convolutional operator), ``W`` an array,
    tensor or operator, ``Z`` the codes. With ``nonneg=True`` the penalty is ``λ Σ z`` and
    negative entries make the energy infinite.
    """
    problem = prepare(Y, W, lam)
    Z_t = prepare_code(Z, "Z", problem)
    reg = get_regularizer(nonneg)
    r = problem.Y - problem.op.decode(Z_t)
    energy = 0.5 * batch_dot(r, r) + problem.lam * reg.value(Z_t)
    if nonneg:
        negative = (Z_t < 0).flatten(1).any(1)
        energy = torch.where(negative, torch.full_like(energy, float("inf")), energy)
    return to_output(energy, problem.numpy_out)


def duality_gap(Y: Any, W: Any, Z: Any, lam: Any, *, nonneg: bool = False) -> Any:
    """Per-sample Lasso duality gap, an upper bound on ``E(z) − min E``; shape ``(batch,)``.

    Dual point ``θ = r / max(λ, ‖Wᵀr‖_∞)`` with ``r = y − Wz``;
    ``gap = P(z) − (½‖y‖² − ½‖y − λθ‖²)``.
    """
    problem = prepare(Y, W, lam)
    Z_t = prepare_code(Z, "Z", problem)
    if nonneg and bool((Z_t < 0).any()):
        raise ValueError("Z has negative entries but nonneg=True; the gap would be infinite")
    _, gap = energy_and_gap(problem.op, problem.Y, Z_t, problem.lam, get_regularizer(nonneg))
    return to_output(gap, problem.numpy_out)
