"""An exact finish for convolutional Lasso codes: coordinate descent on a working set.

A duality-gap certificate for the Lasso only follows the energy once the support is known: the
dual point is a residual made feasible, and its shortfall is first order in how far the
support's correlations are from ``±λ`` while the energy error is second order
(``benchmarks/results/conv_certificate_probe.md``). On B3 ADMM's codes reach a relative error of
1e-4 in about 96 iterations and certify it in 200. ADMM's codes find the support long before
they are exact, though: the working set ``W`` = their non-zeros and the coefficients whose
correlation exceeds ``λ`` holds the optimum's support after about 50 iterations, and coordinate
descent restricted to ``W`` (a coefficient reads and writes only its kernel's window of the
residual, :mod:`._conv_cd_kernel`) then converges in tens of sweeps of ``|W|`` updates. Between
sweeps (when the gap's decay predicts the tolerance, :data:`CHUNK`) the residual is recomputed,
coefficients outside ``W`` that violate ``|(Kᵀr)_j| ≤ λ`` join it, and the certificate is
evaluated (the better of the residual rescaled
globally and pixel by pixel, :mod:`.local_dual`). It stops when the gap reaches the tolerance or
when its rate of decrease says it would not within :data:`MAX_SWEEPS`.
"""

from __future__ import annotations

import math

import torch

from ..operators import LinearOperator, batch_dot
from ..regularizers import Regularizer
from .dual import gap_to_dual, rescaled_dual_value
from .local_dual import LocalRescaling

ATTEMPT_BELOW = 3e-2
"""Tried only where the solver's own relative gap is below this (the support is roughly found)."""
RETRY_FACTOR = 10.0
"""After an attempt that did not certify, the next waits for the solver's gap to fall this much."""
CHUNK = 10
"""Sweeps before the first certificate evaluation; later ones come when the gap's geometric rate
of decrease predicts the tolerance, at least :data:`MIN_CHUNK` and at most :data:`MAX_CHUNK`
sweeps apart (an evaluation costs a decode and two adjoints, about as much as 15 sweeps of B3's
17 000 coefficients)."""
MIN_CHUNK = 5
MAX_CHUNK = 80
MAX_SWEEPS = 400
"""An attempt ends once the gap's rate of decrease over the last chunk says it would not reach
the tolerance within this many sweeps."""


class WorkingSetFinish:
    """The finish as a solver calls it at its convergence checks: tried on the images whose
    relative gap is below :data:`ATTEMPT_BELOW` and has fallen :data:`RETRY_FACTOR` times since
    their last attempt; a candidate replaces the solver's codes where its gap is smaller.

    Parameters
    ----------
    op : LinearOperator
        A convolutional operator.
    Y : torch.Tensor, shape (batch, channels, H, W)
        The images.
    lam : float
    reg : Regularizer
    tol : float
        The solver's relative-gap tolerance.
    """

    def __init__(self, op: LinearOperator, Y: torch.Tensor, lam: float, reg: Regularizer,
                 tol: float) -> None:
        self.op, self.Y, self.lam, self.reg, self.tol = op, Y, lam, reg, tol
        self.last_attempt = torch.full((Y.shape[0],), float("inf"), dtype=torch.float64)

    @classmethod
    def when_applicable(cls, op: LinearOperator, Y: torch.Tensor, lam: float,
                        reg: Regularizer, tol: float) -> WorkingSetFinish | None:
        """The finish, or None where it cannot run: an operator without local kernels, a
        penalty other than L1, ``λ = 0``, tensors off the CPU (the sweeps are a compiled CPU
        loop) or ``tol = 0`` (a fixed number of iterations)."""
        if (lam <= 0 or tol <= 0 or not reg.is_l1 or Y.device.type != "cpu"
                or op.local_kernels() is None):
            return None
        return cls(op, Y, lam, reg, tol)

    def __call__(self, rows: torch.Tensor, z: torch.Tensor, energy: torch.Tensor,
                 gap: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """Try the finish on the working images.

        Parameters
        ----------
        rows : torch.Tensor, shape (n,)
            The working images' rows in the batch.
        z : torch.Tensor, shape (n, n_atoms, H', W')
            Their codes.
        energy, gap : torch.Tensor, shape (n,)
            Their energies and certified gaps.

        Returns
        -------
        None, or ``(into, z, energy, gap, dual)``
            ``into`` ``(m,)`` the positions among the ``n`` whose candidate certifies a smaller
            relative gap, with those candidates' codes ``(m, n_atoms, H', W')``, energies,
            gaps and dual values ``(m,)`` (float64).
        """
        relative = (gap.double() / energy.double()).cpu()
        attempt = ((relative > self.tol) & (relative <= ATTEMPT_BELOW)
                   & (relative * RETRY_FACTOR <= self.last_attempt[rows]))
        if not bool(attempt.any()):
            return None
        picked = attempt.nonzero().flatten()
        self.last_attempt[rows[picked]] = relative[picked]
        z_new, energy_new, gap_new, dual_new = working_set_finish(
            self.op, self.Y[rows[picked]], z[picked], self.lam, self.reg, self.tol)
        better = gap_new / energy_new < relative[picked]
        if not bool(better.any()):
            return None
        return (picked[better], z_new[better], energy_new[better], gap_new[better],
                dual_new[better])


def working_set_finish(op: LinearOperator, Y: torch.Tensor, z: torch.Tensor, lam: float,
                       reg: Regularizer, tol: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine each image's codes by coordinate descent on its working set and certify them.

    Parameters
    ----------
    op : LinearOperator
        A convolutional operator (:meth:`~LinearOperator.local_kernels` is not None).
    Y : torch.Tensor, shape (n, channels, H, W)
        Images.
    z : torch.Tensor, shape (n, n_atoms, H', W')
        Their current codes (not modified).
    lam : float
        ``λ > 0``.
    reg : Regularizer
        L1, one-sided or not.
    tol : float
        Relative gap at which an image's refinement stops.

    Returns
    -------
    z : torch.Tensor, shape (n, n_atoms, H', W')
        The refined codes.
    energy, gap, dual : torch.Tensor, shape (n,), float64
        Their energies, certified duality gaps and the dual values that certify them (the
        gap is ``energy − dual``, plus the rounding allowance of
        :func:`~.dual.gap_to_dual` below float64).
    """
    kernels, circular = op.local_kernels()
    kernels = kernels.detach().contiguous().numpy()
    squared_norms = (kernels.reshape(kernels.shape[0], -1) ** 2).sum(1)
    local = LocalRescaling(op, lam, reg)
    z = z.clone()
    energies, gaps, duals = [], [], []
    for i in range(z.shape[0]):
        energy, gap, dual = _refine(op, local, Y[i : i + 1], z[i : i + 1], kernels,
                                    squared_norms, circular, lam, reg, tol)
        energies.append(energy)
        gaps.append(gap)
        duals.append(dual)
    return z, torch.stack(energies), torch.stack(gaps), torch.stack(duals)


def _refine(op, local, y, z, kernels, squared_norms, circular, lam, reg, tol):
    """:func:`working_set_finish` for one image: ``z`` ``(1, n_atoms, H', W')`` refined in
    place; returns its energy, gap and best dual value ``()`` in float64."""
    from ._conv_cd_kernel import working_set_cd  # numba: compiled on first use

    r = y - op.decode(z)
    c = op.adjoint(r)
    working = (z != 0) | (_excess(c, reg) > lam)
    yy = batch_dot(y, y).double()
    best_dual = torch.full((1,), -math.inf, dtype=torch.float64)
    energy = gap = torch.tensor(math.inf, dtype=torch.float64)
    previous, chunk, sweeps = None, CHUNK, 0
    while chunk > 0:
        coords = _spatial_order(working[0])
        values = z[0][tuple(coords.T)].contiguous()
        residual = r[0].contiguous()
        coords_np = coords.numpy()
        working_set_cd(kernels, residual.numpy(), coords_np[:, 0].copy(), coords_np[:, 1].copy(),
                       coords_np[:, 2].copy(), values.numpy(), squared_norms, float(lam),
                       bool(reg.nonneg), bool(circular), chunk)
        sweeps += chunk
        z[0][tuple(coords.T)] = values
        r = y - op.decode(z)
        c = op.adjoint(r)
        energy, dual = _energy_and_dual(local, y, z, r, c, lam, reg)
        # sweeps only lower the energy: the best dual value seen certifies the latest codes
        best_dual = torch.maximum(best_dual, dual)
        gap = gap_to_dual(energy, best_dual, yy).double()[0]
        energy = energy.double()[0]
        outside = (_excess(c, reg) > lam) & ~working
        working |= outside
        if gap <= tol * energy or not bool(torch.isfinite(gap)):
            break
        needed = _sweeps_needed(previous, gap, chunk, tol * float(energy))
        if needed > MAX_SWEEPS - sweeps and not bool(outside.any()):
            break
        chunk = math.ceil(min(max(needed, MIN_CHUNK), MAX_CHUNK, MAX_SWEEPS - sweeps))
        previous = gap
    return energy, gap, best_dual[0]


def _sweeps_needed(previous: torch.Tensor | None, gap: torch.Tensor, chunk: int,
                   target: float) -> float:
    """Sweeps to bring ``gap`` to ``target`` at the geometric rate of the last ``chunk``
    sweeps, which took it from ``previous``; :data:`CHUNK` before there is a rate, infinite
    where it did not fall."""
    if previous is None:
        return float(CHUNK)
    rate = float(gap / previous)
    if not 0 < rate < 1:
        return math.inf
    return chunk * math.log(target / float(gap)) / math.log(rate)


def _energy_and_dual(local: LocalRescaling, y, z, r, c, lam, reg):
    """One image's energy ``(1,)`` (working precision) and dual value ``(1,)`` (float64): the
    better of the residual rescaled globally and pixel by pixel."""
    energy = 0.5 * batch_dot(r, r) + lam * reg.value(z)
    plain = rescaled_dual_value(c.flatten(1).double(), batch_dot(y, r).double(),
                                batch_dot(r, r).double(), lam, reg)
    return energy, torch.maximum(plain, local.dual_value(y, r, c))


def _excess(c: torch.Tensor, reg: Regularizer) -> torch.Tensor:
    """The magnitude the optimality condition bounds by ``λ``."""
    return c.clamp_min(0) if reg.nonneg else c.abs()


def _spatial_order(mask: torch.Tensor) -> torch.Tensor:
    """The ``(m, i, j)`` coordinates ``(n, 3)`` of ``mask`` ``(n_atoms, H', W')``, sorted by
    position then atom (neighbouring updates touch neighbouring pixels)."""
    coords = mask.nonzero()
    width = mask.shape[2]
    key = (coords[:, 1] * width + coords[:, 2]) * mask.shape[0] + coords[:, 0]
    return coords[torch.argsort(key, stable=True)]


__all__ = ["WorkingSetFinish", "working_set_finish"]
