"""Compiled per-sample coordinate descent on the Gram matrix (method ``"gram_cd"``).

For a dense dictionary and an L1 penalty on the CPU, each sample is solved on its own, in
parallel across ``torch.get_num_threads()`` threads, by the numba-compiled loop of
:mod:`._gram_cd_kernel`: a coordinate-descent sweep graded by correlation (the strongest
atoms first) finds a first support, cheap sweeps on the Gram block of the working set (the
support and the atoms that violate the optimality condition) refine it, and a sign-checked
Newton step on that block lands on the exact minimiser. It does what scikit-learn's
``sparse_encode(algorithm="lasso_cd")`` does, but without a Python call per sample and with
the exact finish, so it is the ``"auto"`` choice on the CPU (measured in
``benchmarks/results/B1.md``). The first call on a machine compiles the
loop (a few seconds; cached on disk afterwards).

Everything runs in float64. Float32 signals and atoms are exact in float64, so the loop solves
the caller's own problem; it then rounds the codes to float32 values and reports their energy
and their gap to the dual value that certified the float64 codes (the rounding moves the
energy by a second-order amount; the rounded codes' own residual, rescaled, would fall about
1e-5 of the energy short, from the rounding's first-order effect on ``‖Wᵀr‖∞``).

The certificate is the duality gap or, for a large batch on a dictionary whose Gram matrix is
positive definite (no more atoms than dimensions), the strong-convexity bound where smaller
(:mod:`.strong_convexity`; on B1's random dictionary a solve that stops itself at 1e-4 took
446 ms where the run an oracle stops took 429 ms, 2.03× before); both bound
``E(z) − min E``. Dual extrapolation (Massias et al. 2020, :mod:`.dual`) was tried in this
loop and left out: on B1's random dictionary the sweeps cut the error tenfold each, so the
extrapolated dual point gained at most one sweep and the self-stopped run was as slow (641
against 657 ms).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from .._validation import check_int
from ..objective import CANCELLATION
from ..operators import GRAM_MAX_ATOMS, LinearOperator
from ..problem import Problem
from ..regularizers import Regularizer
from ._numba_threads import parallel_loops_unusable, use_torch_threads
from .api import Method, register_method
from .result import Callback, IterationState, SolverResult
from .strong_convexity import strong_convexity, strong_convexity_bound

SPARSE_SIGNAL_DENSITY = 0.25
"""Signals with at most this share of non-zero entries get their correlations ``Wᵀy`` from a
loop over those entries instead of a dense BLAS product. Measured on B1's 10 000 × 784 MNIST
digits and 256 atoms, float64, 2 threads, with random pixels made non-zero to raise the
density: 28–33 ms against 46–50 ms at MNIST's 19 %, 36–44 against 46–51 at 25 %, the same
time near 30 %, 94 against 48 at 50 %."""


def gram_cd(problem: Problem, reg: Regularizer, z0: torch.Tensor | None = None, *,
            tol: float, max_iter: int, callback: Callback | None = None,
            check_every: int | None = None) -> SolverResult:
    """The tensor-level solver (inputs validated; CPU tensors, explicit Gram, L1 penalty).

    Parameters
    ----------
    problem : Problem
        Signals ``Y`` ``(batch, n_features)``, an operator with an explicit
        :meth:`~latentebm.operators.LinearOperator.gram_matrix` ``(n_atoms, n_atoms)``, and
        ``λ > 0``.
    reg : Regularizer
        An L1 penalty (``reg.nonneg`` for the one-sided one).
    z0 : torch.Tensor of shape (batch, n_atoms) or None
        Warm start.
    tol : float
        Relative certificate at which a sample stops: the duality gap or, where it is smaller
        and ``G`` is positive definite, the strong-convexity bound of
        :mod:`.strong_convexity` (computed by :func:`._gram_cd_kernel._energy_and_gap`).
    max_iter : int
        Most outer rounds per sample (each up to :data:`~._gram_cd_kernel.ACTIVE_SWEEPS`
        sweeps over the working set, the first from zero codes after a graded sweep over every
        atom); they are what ``n_iter`` counts.
    callback : callable or None
        ``callback(iteration, IterationState)`` with energies and gaps.
    check_every : int or None
        With a ``callback``: outer rounds (each the working set's sweeps and a gap) per
        call of the compiled loop (default 1); after each call the callback sees the samples
        still running, with the number of rounds so far as its iteration. Without a callback
        the loop runs in one call; the codes are the same either way.

    Returns
    -------
    SolverResult
        Tensors in ``Y``'s dtype; ``method="gram_cd"``; ``gap`` is the certificate, an upper
        bound on ``E(z) − min E``.
    """
    from ._gram_cd_kernel import INNER_TOL, lasso_gram_cd

    use_torch_threads()
    op, Y, lam = problem.op, problem.Y, problem.lam
    batch = Y.shape[0]
    single = Y.dtype == torch.float32
    # float32 inputs are exact in float64, so the float64 solve is of the caller's own problem
    op64 = op.to(dtype=torch.float64) if single else op
    G64 = op64.gram_matrix().numpy()
    B, yy = _correlations(op64, Y)
    if not (np.isfinite(G64).all() and np.isfinite(B).all()):
        raise FloatingPointError(
            "method 'gram_cd': the Gram matrix WᵀW or the correlations Wᵀy overflow float64 "
            "(atoms or signals too large); rescale W and Y (and λ with them)")
    Z = np.zeros_like(B) if z0 is None else z0.double().numpy().copy()
    # an all-zero atom's code is 0 at the optimum, and the loop skips such atoms: a warm start
    # there would stay, its λ|z| in the gap for ever
    Z[:, np.diag(G64) <= 0] = 0.0
    mu = strong_convexity(G64, int(np.prod(Y.shape[1:])), batch)
    energy, gap = np.empty(batch), np.empty(batch)
    rounds = np.zeros(batch, dtype=np.int64)
    inner_tols = np.full(batch, INNER_TOL)
    if callback is None:
        lasso_gram_cd(G64, B, Z, yy, lam, mu, tol, max_iter, reg.nonneg, inner_tols, rounds,
                      energy, gap, single)
    else:
        running = np.arange(batch)
        done = 0
        while running.size and done < max_iter:
            done = min(done + (check_every or 1), max_iter)
            part = [np.ascontiguousarray(a[running]) for a in (B, Z, yy, inner_tols, rounds)]
            e, g = np.empty(running.size), np.empty(running.size)
            lasso_gram_cd(G64, part[0], part[1], part[2], lam, mu, tol, done, reg.nonneg,
                          part[3], part[4], e, g, False)
            Z[running], inner_tols[running], rounds[running] = part[1], part[3], part[4]
            energy[running], gap[running] = e, g
            callback(done, IterationState(done, batch, torch.from_numpy(part[1]).to(Y.dtype),
                                          torch.from_numpy(running), torch.from_numpy(e),
                                          torch.from_numpy(g)))
            running = running[g > tol * e]
        if single:  # no round left to run: only the rounding to float32 and its energies
            lasso_gram_cd(G64, B, Z, yy, lam, mu, tol, 0, reg.nonneg, inner_tols,
                          np.zeros(batch, dtype=np.int64), energy, gap, True)
    _revalue_cancelled(op64, Y, Z, yy, lam, mu, reg.nonneg, energy, gap)
    z = torch.from_numpy(Z).to(Y.dtype)
    energy_t = torch.from_numpy(energy).to(Y.dtype)
    gap_t = _rounded_up(torch.from_numpy(gap), Y.dtype)
    finite = torch.isfinite(energy_t) & torch.isfinite(gap_t)
    n_iter = torch.from_numpy(rounds)
    return SolverResult(z=z, gap=gap_t, energy=energy_t,
                        converged=finite & (gap_t <= tol * energy_t),
                        n_iter_per_sample=n_iter, n_iter=int(n_iter.max()) if batch else 0,
                        method="gram_cd")


def _correlations(op64: LinearOperator, Y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``B = Wᵀy`` ``(batch, n_atoms)`` and ``‖y‖²`` ``(batch,)`` in float64 for signals ``Y``
    ``(batch, n_features)``: by the compiled loop that skips zero entries when the operator is
    an explicit matrix and a sample of the rows is at most :data:`SPARSE_SIGNAL_DENSITY`
    non-zero, else by one BLAS product."""
    from ._gram_cd_kernel import sparse_signal_correlations

    matrix = op64.matrix()
    Y64 = Y.double()  # one float64 copy of float32 signals, shared by both routes
    if matrix is not None and _mostly_zero(Y64.numpy()):
        B = np.empty((Y64.shape[0], op64.n_atoms))
        yy = np.empty(Y64.shape[0])
        sparse_signal_correlations(np.ascontiguousarray(Y64.numpy()),
                                   np.ascontiguousarray(matrix.numpy()), B, yy)
        return B, yy
    # one pass with float64 accumulation and no temporary (torch's (Y * Y).sum(1) on B1's
    # 10 000 × 784 float64 digits took 28 ms, mostly page faults on the product; this, 2 ms)
    Y_np = Y.numpy()
    return op64.adjoint(Y64).numpy(), np.einsum("ij,ij->i", Y_np, Y_np, dtype=np.float64)


def _mostly_zero(Y: np.ndarray) -> bool:
    """Whether 256 rows of ``Y`` ``(batch, n_features)`` drawn at random (a fixed seed, so the
    choice is reproducible; evenly spaced rows were fooled by alternating sparse and dense
    rows) are at most :data:`SPARSE_SIGNAL_DENSITY` non-zero."""
    rows = Y[np.random.default_rng(0).integers(0, Y.shape[0], size=min(Y.shape[0], 256))]
    return np.count_nonzero(rows) <= SPARSE_SIGNAL_DENSITY * rows.size


def _revalue_cancelled(op64: LinearOperator, Y: torch.Tensor, Z: np.ndarray, yy: np.ndarray,
                       lam: float, mu: float, nonneg: bool, energy: np.ndarray,
                       gap: np.ndarray) -> None:
    """The compiled loop measures ``‖r‖² = ‖y‖² − bᵀz − zᵀq`` in code space, which loses
    the digits of a residual much smaller than the signal (two nearly collinear atoms fitting
    ``y`` at λ = 1e-8: an energy 4e-5 below the true minimum). Where ``‖r‖²`` is below
    :data:`CANCELLATION` ``‖y‖²``, ``energy`` and ``gap`` (``(n,)``, overwritten) are those of
    the residual ``y − Wz`` itself: its dual point ``s·r`` scaled into the dual constraint or,
    with ``mu > 0`` (:func:`.strong_convexity`), the strong-convexity bound where smaller.
    ``Y`` ``(n, n_features)`` are the signals, ``Z`` ``(n, n_atoms)`` the final codes (float64)
    and ``yy`` ``(n,)`` the squared signal norms."""
    rr_code_space = 2 * (energy - lam * np.abs(Z).sum(1))
    rows = np.flatnonzero(rr_code_space < CANCELLATION * yy)
    if rows.size == 0:
        return
    z = torch.from_numpy(Z[rows])
    y = Y[torch.from_numpy(rows)].double()
    r = y - op64.decode(z)
    correlations = op64.adjoint(r)
    one_sided = correlations if nonneg else correlations.abs()
    largest = one_sided.amax(1).clamp_min(0)
    rr = (r * r).sum(1)
    yr = (y * r).sum(1)
    value = 0.5 * rr + lam * z.abs().sum(1)
    scale = torch.where(rr > 0, yr / rr, torch.ones_like(rr))
    scale = torch.minimum(scale, lam / largest.clamp_min(torch.finfo(rr.dtype).tiny))
    scale = scale.clamp_min(0)
    dual = scale * yr - 0.5 * scale * scale * rr
    certificate = (value - dual).clamp_min(0)
    if mu > 0:
        certificate = torch.minimum(
            certificate, strong_convexity_bound(correlations, z, lam, nonneg, mu))
    energy[rows] = value.numpy()
    gap[rows] = certificate.numpy()


def _rounded_up(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``values`` (float64) in ``dtype``, rounded up where rounding to nearest went down (a
    gap stays an upper bound)."""
    out = values.to(dtype)
    return torch.where(out.double() < values, torch.nextafter(out, out.new_tensor(torch.inf)),
                       out)


def _unsupported(op: LinearOperator, reg: Regularizer) -> str | None:
    if not op.has_gram_matrix:
        return "it needs an explicit Gram matrix (op.gram_matrix() is None)"
    if not reg.is_l1:
        return "it solves L1 penalties only (reg.is_l1 is False)"
    if op.device.type != "cpu":
        return "it runs on the CPU only (use 'fista' or 'cd' on a GPU)"
    if importlib.util.find_spec("numba") is None:
        return "it needs numba (pip install numba)"
    return parallel_loops_unusable()


def _preferred(problem: Problem, reg: Regularizer) -> bool:
    """On the CPU, whenever it applies, ``λ > 0`` and the Gram matrix is not huge
    (:data:`~latentebm.operators.GRAM_MAX_ATOMS`): on B1 (10 000 MNIST digits, 256 atoms,
    2 threads) it reached 1e-4 and 1e-6 several times sooner than FISTA and than
    scikit-learn."""
    return problem.lam > 0 and problem.op.n_atoms <= GRAM_MAX_ATOMS


def _run(problem: Problem, reg: Regularizer, z0: torch.Tensor | None, *, tol: float,
         max_iter: int, callback: Callback | None, check_every: int | None = None,
         ) -> SolverResult:
    if problem.lam == 0:
        raise ValueError("method 'gram_cd' needs lam > 0 (use 'fista' for least squares)")
    if check_every is not None:
        check_every = check_int(check_every, "check_every", low=1)
    return gram_cd(problem, reg, z0, tol=tol, max_iter=max_iter, callback=callback,
                   check_every=check_every)


register_method(Method("gram_cd", _run, unsupported=_unsupported, preferred=_preferred,
                       priority=5, options=frozenset({"check_every"})))

__all__ = ["gram_cd"]
