"""The Lasso energy ``½‖y − Az‖² + λR(z)`` and its duality-gap certificate, per sample."""

from __future__ import annotations

from typing import Any

import torch

from ._docs import doc_filler, fill_doc
from ._validation import check_bool
from .operators import LinearOperator, batch_dot
from .problem import Problem, prepare, prepare_code, to_output
from .regularizers import Regularizer, get_regularizer

_fill_gap_doc = doc_filler({"returns_energy_gap": (
    "Returns\n-------\nenergy : torch.Tensor of shape (batch,)\n"
    "    ``P(z) = ½‖y − Az‖² + λR(z)``.\ngap : torch.Tensor of shape (batch,)\n"
    "    The duality gap, clamped at 0.")})


CANCELLATION = 1e-6
"""A ``‖r‖²`` measured in code space (``‖y‖² − 2⟨Aᵀy, z⟩ + ⟨z, AᵀAz⟩``) below this share of
``‖y‖²`` has lost too many digits to certify anything: solvers that measure it so compute such
samples' energy and gap again from the residual itself."""


@_fill_gap_doc
def energy_and_gap(
    op: LinearOperator, Y: torch.Tensor, z: torch.Tensor, lam: float, reg: Regularizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """Primal energy ``P(z)`` and duality gap ``P(z) − D(θ) ≥ P(z) − P*``, per sample.

    With ``r = y − Az``, ``c = Aᵀr`` and the dual point ``θ = r / max(λ, R°(c))``:
    ``gap = ½(1−u)²‖r‖² + λR(z) − u⟨z, c⟩`` where ``u = λ / max(λ, R°(c))``. This form avoids the
    cancellation of subtracting two nearly equal energies, so float32 certifies small gaps.

    Parameters
    ----------
    {op_decoder}
    {Y_signals}
    {z_codes}
    {lam_weight}
    {reg_penalty}

    {returns_energy_gap}
    """
    r = Y - op.decode(z)
    return energy_and_gap_from(batch_dot(r, r), op.adjoint(r), z, lam, reg)


@_fill_gap_doc
def energy_and_gap_from(
    rr: torch.Tensor, c: torch.Tensor, z: torch.Tensor, lam: float, reg: Regularizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`energy_and_gap` from ``‖r‖²`` and ``c = Aᵀr``, for callers that hold them already
    (a solver that keeps ``AᵀAz`` has ``Aᵀr = Aᵀy − AᵀAz``).

    Parameters
    ----------
    rr : torch.Tensor of shape (batch,)
        Squared residual norms ``‖y − Az‖²``.
    c : torch.Tensor of shape (batch, *code_dims)
        ``Aᵀr``.
    {z_codes}
    {lam_weight}
    {reg_penalty}

    {returns_energy_gap}
    """
    reg_value = reg.value(z)
    if reg.is_constraint:  # P − D at θ = r, D(θ) = ⟨y, θ⟩ − ½‖θ‖² − σ(Aᵀθ)
        return 0.5 * rr + reg_value, (reg.dual_norm(c) - batch_dot(z, c)).clamp_min(0)
    primal = 0.5 * rr + lam * reg_value
    scale = torch.clamp(reg.dual_norm(c), min=lam)
    u = torch.where(scale > 0, lam / scale.clamp_min(torch.finfo(scale.dtype).tiny), 1.0)
    gap = 0.5 * (1 - u) ** 2 * rr + lam * reg_value - u * batch_dot(z, c)
    return primal, gap.clamp_min(0)


@fill_doc
def lasso_energy(Y: Any, W: Any, Z: Any, lam: Any, *, nonneg: bool = False) -> Any:
    """Per-sample ``½‖y − Wz‖² + λ‖z‖₁``.

    With ``nonneg=True`` the penalty is ``λ Σ z`` and negative entries make the energy infinite.

    Parameters
    ----------
    {lasso_YWZ}
    {lam_weight}
    nonneg : bool, default=False
        Use the non-negative Lasso penalty.

    Returns
    -------
    numpy.ndarray or torch.Tensor of shape (batch,)
        The energies; a NumPy array when ``Y`` is not a tensor.
    """
    problem, Z_t, reg = _prepared(Y, W, Z, lam, nonneg)
    r = problem.Y - problem.op.decode(Z_t)
    energy = 0.5 * batch_dot(r, r) + problem.lam * reg.value(Z_t)
    _refuse_overflow(energy, "energy", problem.Y.dtype)
    if reg.nonneg:
        negative = (Z_t < 0).flatten(1).any(1)
        energy = torch.where(negative, torch.full_like(energy, float("inf")), energy)
    return to_output(energy, problem.numpy_out)


@fill_doc
def duality_gap(Y: Any, W: Any, Z: Any, lam: Any, *, nonneg: bool = False) -> Any:
    """Per-sample Lasso duality gap, an upper bound on ``E(z) − min E``.

    Dual point ``θ = r / max(λ, ‖Wᵀr‖_∞)`` with ``r = y − Wz`` (the non-negative dual norm
    ``max(max Wᵀr, 0)`` when ``nonneg``); ``gap = P(z) − (½‖y‖² − ½‖y − λθ‖²)``. The solvers'
    ``result.gap`` bounds the same ``E(z) − min E`` with better dual points (the best seen,
    extrapolated, rescaled pixel by pixel on convolutions), so it can be much smaller than this
    gap of the same codes (on ADMM's convolutional codes, 100× smaller).

    Parameters
    ----------
    {lasso_YWZ}
    {lam_weight}
    nonneg : bool, default=False
        Use the non-negative Lasso penalty; ``Z`` must then have no negative entry.

    Returns
    -------
    numpy.ndarray or torch.Tensor of shape (batch,)
        The gaps; a NumPy array when ``Y`` is not a tensor.
    """
    problem, Z_t, reg = _prepared(Y, W, Z, lam, nonneg)
    if reg.nonneg and bool((Z_t < 0).any()):
        raise ValueError("Z has negative entries but nonneg=True; the gap would be infinite")
    _, gap = energy_and_gap(problem.op, problem.Y, Z_t, problem.lam, reg)
    _refuse_overflow(gap, "duality gap", problem.Y.dtype)
    return to_output(gap, problem.numpy_out)


def _refuse_overflow(values: torch.Tensor, what: str, dtype: torch.dtype) -> None:
    """Finite inputs whose products or squares overflow ``dtype``: an error, not inf or NaN."""
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise FloatingPointError(
            f"the {what} of {bad} sample(s) is not finite: Y, W or Z hold values too large for "
            f"{str(dtype).replace('torch.', '')} (their products overflow); rescale them")


def _prepared(Y: Any, W: Any, Z: Any, lam: Any, nonneg: Any
              ) -> tuple[Problem, torch.Tensor, Regularizer]:
    """The validated problem of the public functions, their codes ``Z`` as a tensor and the
    penalty ``nonneg`` names."""
    problem = prepare(Y, W, lam)
    return problem, prepare_code(Z, "Z", problem), get_regularizer(check_bool(nonneg, "nonneg"))
