"""Dual points rescaled pixel by pixel, for operators whose atoms are local (convolutions).

A residual ``r`` becomes dual-feasible for the L1 penalty when divided by one number,
``max(1, ‖Aᵀr‖∞/λ)``. On convolutional problems ADMM's and FISTA's residuals exceed ``λ`` by a
little on about half of the support at once (B3: 5 400 of 10 200 non-zero codes at iteration
150), so that one number shrinks the whole residual and the dual value loses about
``ε·λ‖z‖₁``: on B3 the primal iterate reached a relative error of 1e-4 in 96 iterations and the
certificate needed 310. Here every pixel is divided instead by the largest excess
``max(1, |Aᵀr|/λ)`` among the code positions whose kernel covers it (the operator's
``footprint_max``), so only the neighbourhoods of the offending codes shrink. The result's own
correlations are computed (one adjoint) and whatever excess remains is removed by the usual
global rescaling, so the point is feasible by construction.

On B3 at iteration 150 this took the dual value's relative shortfall from 3.4e-2 to 2.8e-3
(``benchmarks/results/local_dual_probe.md``); the self-certified ADMM run went from 310 to 200
iterations, FISTA's from 530 to 310. The footprint itself is the best window found there: one
pixel wider on each side, one narrower, a blurred weight or one shaped by the kernels'
magnitude all did worse (3.5e-3 to 9.9e-3).
"""

from __future__ import annotations

import torch

from ..operators import LinearOperator, batch_dot
from ..regularizers import Regularizer
from .dual import rescaled_dual_value


class LocalRescaling:
    """``θ = r / footprint_max(max(1, |Aᵀr|/λ))`` and its correlations ``Aᵀθ``.

    Parameters
    ----------
    op : LinearOperator
        An operator with ``footprint_max`` (see :func:`local_rescaling`).
    lam : float
        ``λ > 0``.
    reg : Regularizer
        An L1 penalty (one-sided or not).
    """

    def __init__(self, op: LinearOperator, lam: float, reg: Regularizer) -> None:
        self.op, self.lam, self.reg = op, float(lam), reg

    def residual(self, Y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``Y − A z``: signals ``(n, *signal_dims)``, codes ``(n, *code_dims)``."""
        return Y - self.op.decode(z)

    def __call__(self, r: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rescale the residual ``r`` ``(n, *signal_dims)`` whose correlations are ``c = Aᵀr``
        ``(n, n_atoms, H', W')``; returns ``θ`` (shaped like ``r``) and ``Aᵀθ`` (like ``c``)."""
        magnitude = c.clamp_min(0) if self.reg.nonneg else c.abs()
        excess = (magnitude.amax(1, keepdim=True) / self.lam).clamp_min(1)
        theta = r / self.op.footprint_max(excess)
        return theta, self.op.adjoint(theta)

    def dual_value(self, Y: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The dual value ``λ⟨y, θ'⟩ − ½λ²‖θ'‖²`` of ``θ'``, the rescaled ``θ`` divided by
        ``max(λ, R°(Aᵀθ))``.

        Parameters
        ----------
        Y : torch.Tensor, shape (n, *signal_dims)
            The signals.
        r : torch.Tensor, shape (n, *signal_dims)
            A residual of each.
        c : torch.Tensor, shape (n, n_atoms, H', W')
            ``Aᵀr``.

        Returns
        -------
        torch.Tensor, shape (n,), float64
            ``-inf`` where not finite.
        """
        theta, c_theta = self(r, c)
        theta, y = theta.flatten(1).double(), Y.flatten(1).double()
        return rescaled_dual_value(c_theta.flatten(1).double(), batch_dot(y, theta),
                                   batch_dot(theta, theta), self.lam, self.reg)


def local_rescaling(op: LinearOperator, lam: float, reg: Regularizer) -> LocalRescaling | None:
    """The pixelwise rescaling for ``op`` and ``reg``, or None where it does not apply (an
    operator without ``footprint_max``, whose atoms are not local, a penalty that is not an L1
    norm, or ``λ = 0``)."""
    if lam <= 0 or not reg.is_l1 or not callable(getattr(op, "footprint_max", None)):
        return None
    return LocalRescaling(op, lam, reg)


__all__ = ["LocalRescaling", "local_rescaling"]
