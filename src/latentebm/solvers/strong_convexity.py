"""A second certificate for Lasso problems whose energy is strongly convex.

Where ``WᵀW`` is positive definite (no more atoms than dimensions, none a combination of the
others), ``E(z) = ½‖y − Wz‖² + λ‖z‖₁`` is ``μ``-strongly convex with ``μ`` its smallest
eigenvalue, so for any subgradient ``g`` at ``z``, ``E(z) − min E ≤ ‖g‖²/(2μ)`` (minimise the
strong-convexity lower bound ``E(z) + ⟨g, u − z⟩ + μ/2‖u − z‖²`` over ``u``). Near the optimum
this bound falls like the square of the distance to it, as the error does, where the duality gap
of a residual scaled into the dual constraint falls only like the distance: on B1's random
dictionary (784 × 256, ``μ`` = 0.19) the bound stayed within 3–5× of the true error where the
gap was 10³–10⁴× above it. Solvers report the smaller of the two.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..objective import energy_and_gap_from
from ..operators import GRAM_MAX_ATOMS, LinearOperator, batch_dot
from ..regularizers import Regularizer

MIN_BATCH_PER_ATOM = 8
"""The bound is used for batches of at least this many samples per atom: its eigenvalues cost
about as much as coding ``n_atoms`` samples (4 ms for 256 atoms), 5 % of a 10 000-digit B1
solve but most of a 256-sample minibatch's."""
EIGENVALUE_MARGIN = 16
"""The smallest eigenvalue LAPACK reports is lowered by this many times
``(n_atoms + n_features)·ε·λ_max``, which covers its own backward error (a small multiple of
``ε·‖G‖``) and the rounding of ``G = WᵀW`` itself, so that it bounds the true one."""


def strong_convexity(gram: torch.Tensor | np.ndarray, n_features: int, batch: int) -> float:
    """A lower bound on the smallest eigenvalue of ``WᵀW``, or 0 where none is computed or it
    is not positive.

    Parameters
    ----------
    gram : torch.Tensor or numpy.ndarray of shape (n_atoms, n_atoms)
        ``WᵀW``, in float64.
    n_features : int
        Dimensions of a signal (``W``'s rows); with more atoms, ``WᵀW`` is singular.
    batch : int
        Samples to be solved; below :data:`MIN_BATCH_PER_ATOM` per atom, 0 is returned
        without computing anything.

    Returns
    -------
    float
        ``μ ≥ 0``.
    """
    n_atoms = gram.shape[0]
    if n_atoms > n_features or batch < MIN_BATCH_PER_ATOM * n_atoms:
        return 0.0
    if isinstance(gram, torch.Tensor) and gram.device.type != "cpu":
        eigenvalues = torch.linalg.eigvalsh(gram).cpu().numpy()
    else:
        matrix = gram.numpy() if isinstance(gram, torch.Tensor) else gram
        # one BLAS thread: a multithreaded call leaves OpenBLAS's threads spinning for ~0.1 s,
        # taking a core from the solver loop that follows (B1a-10 took 220–260 ms instead of
        # 140–180 ms)
        with threadpool_limits(1, user_api="blas"):
            eigenvalues = np.linalg.eigvalsh(matrix)
    margin = (EIGENVALUE_MARGIN * (n_atoms + n_features) * np.finfo(np.float64).eps
              * max(float(eigenvalues[-1]), 0.0))
    return max(float(eigenvalues[0]) - margin, 0.0)


def strong_convexity_bound(c: torch.Tensor, z: torch.Tensor, lam: float, nonneg: bool,
                           mu: float) -> torch.Tensor:
    """``‖g‖²/(2μ)`` for the subgradient ``g`` of least norm of the (non-negative) Lasso energy.

    Parameters
    ----------
    c : torch.Tensor of shape (batch, n_atoms)
        ``Wᵀr``, ``r = y − Wz``.
    z : torch.Tensor of shape (batch, n_atoms)
        The codes.
    lam : float
        ``λ``.
    nonneg : bool
        The non-negative Lasso (``g_j = max(c_j − λ, 0)`` where ``z_j = 0``, instead of
        ``max(|c_j| − λ, 0)``).
    mu : float
        ``μ > 0`` from :func:`strong_convexity`.

    Returns
    -------
    torch.Tensor of shape (batch,)
        Upper bounds on ``E(z) − min E``.
    """
    one_sided = c if nonneg else c.abs()
    g = torch.where(z != 0, lam * z.sign() - c, (one_sided - lam).clamp_min(0))
    return batch_dot(g, g) / (2 * mu)


def lasso_strong_convexity(op: LinearOperator, Y: torch.Tensor, lam: float,
                           reg: Regularizer) -> float:
    """``μ`` for the torch solvers (FISTA, ISTA, ``"cd"``) on ``Y``, or 0 where they keep the
    duality gap alone: below float64 (the least-norm subgradient near the optimum is then
    rounding noise, too coarse to bound the error with), for penalties other than L1, for
    ``λ = 0``, for operators without an explicit Gram matrix of at most
    :data:`~latentebm.operators.GRAM_MAX_ATOMS` atoms, and for batches below
    :data:`MIN_BATCH_PER_ATOM` samples per atom (checked before the Gram matrix is built).

    Parameters
    ----------
    op : LinearOperator
        The decoder.
    Y : torch.Tensor of shape (batch, *signal_dims)
        The signals.
    lam : float
        ``λ``.
    reg : Regularizer
        The penalty.

    Returns
    -------
    float
        ``μ ≥ 0``.
    """
    if (Y.dtype != torch.float64 or lam <= 0 or not reg.is_l1 or not op.has_gram_matrix
            or op.n_atoms > GRAM_MAX_ATOMS or Y.shape[0] < MIN_BATCH_PER_ATOM * op.n_atoms):
        return 0.0
    return strong_convexity(op.gram_matrix(), math.prod(Y.shape[1:]), Y.shape[0])


def energy_and_certificate(rr: torch.Tensor, c: torch.Tensor, z: torch.Tensor, lam: float,
                           reg: Regularizer, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The energy and the smaller of the duality gap and, where ``mu > 0``, the
    strong-convexity bound.

    Parameters
    ----------
    rr : torch.Tensor of shape (batch,)
        ``‖y − Wz‖²``.
    c : torch.Tensor of shape (batch, n_atoms)
        ``Wᵀr``.
    z : torch.Tensor of shape (batch, n_atoms)
        The codes.
    lam : float
        ``λ``.
    reg : Regularizer
        The penalty.
    mu : float
        From :func:`strong_convexity` (0: the duality gap alone).

    Returns
    -------
    energy, certificate : torch.Tensor of shape (batch,)
        ``E(z)`` and an upper bound on ``E(z) − min E``.
    """
    energy, gap = energy_and_gap_from(rr, c, z, lam, reg)
    if mu > 0:
        gap = torch.minimum(gap, strong_convexity_bound(c, z, lam, reg.nonneg, mu))
    return energy, gap


__all__ = ["strong_convexity", "strong_convexity_bound", "lasso_strong_convexity",
           "energy_and_certificate"]
