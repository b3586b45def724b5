"""ISTA and FISTA for ``min_z ½‖y − Az‖² + λR(z)``: the validated public entry points.

The batched loop itself (momentum, restart, step sizes, the duality-gap stopping rule, the exact
solve on an identified support) lives in :mod:`latentebm._proximal_gradient`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._problem import prepare, prepare_code, to_output
from ._proximal_gradient import proximal_gradient
from ._validation import check_int, check_scalar
from .regularizers import Regularizer, get_regularizer


@dataclass
class SolverResult:
    """Codes and their certificate. Arrays follow the input type (NumPy in, NumPy out).

    z: codes ``(batch, *code_dims)``; gap: per-sample duality gap; energy: per-sample primal
    energy; converged: per-sample ``gap <= tol * energy``; n_iter_per_sample: iterations each
    sample ran; n_iter: the largest of those.
    """

    z: Any
    gap: Any
    energy: Any
    converged: Any
    n_iter_per_sample: Any
    n_iter: int

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())


def fista(
    Y: Any,
    W: Any,
    lam: Any,
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    z0: Any = None,
    nonneg: bool = False,
    lipschitz: float | None = None,
    backtracking: bool | None = None,
    restart: bool = True,
    check_every: int = 10,
    polish: bool = True,
    regularizer: Regularizer | None = None,
) -> SolverResult:
    """FISTA (Beck & Teboulle 2009) with adaptive restart (O'Donoghue & Candès 2015).

    Y: ``(batch, n_features)`` signals (or ``(batch, C, H, W)`` with a convolutional operator).
    W: dictionary ``(n_features, n_atoms)`` as array or tensor, or a :class:`LinearOperator`.
    lam: ``λ >= 0`` of the energy ``½‖y − Wz‖² + λ‖z‖₁`` (the ½ convention of scikit-learn's
    ``sparse_encode`` and SPAMS; the lecture's λ is twice this one).
    tol: stop a sample when its duality gap is at most ``tol`` times its energy; by default
    1e-8 in float64 and 1e-5 in float32 (float32 rounding limits certifiable gaps to ~1e-6).
    With ``lam = 0`` (least squares) the gap is uninformative and the rule becomes a relative
    proximal-gradient norm ``‖z − prox(z − ∇f)‖ ≤ tol·‖Wᵀy‖``.
    z0: warm start, shape of the codes. nonneg: constrain ``z >= 0``.
    lipschitz: a known bound on ``λ_max(WᵀW)``; by default a power-iteration estimate.
    backtracking: per-sample step sizes by backtracking, allowed to grow again (``L`` shrinks by
    10 % a step and doubles where a step overshoots), so they follow the local curvature, which
    on a sparse support is often far below ``λ_max(WᵀW)``. ``None`` (default): on for dense
    dictionaries when ``lipschitz`` is not given, off otherwise (fixed step ``1/L``).
    polish: for dense dictionaries, finish with active-set rounds on the identified support
    (solve exactly on it, drop atoms whose sign flips, add atoms that violate optimality); a
    result is kept only where its duality gap is smaller.
    regularizer: another :class:`Regularizer` instead of (nonneg) L1.
    """
    return _solve(Y, W, lam, locals(), accelerated=True)


def ista(
    Y: Any,
    W: Any,
    lam: Any,
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    z0: Any = None,
    nonneg: bool = False,
    lipschitz: float | None = None,
    backtracking: bool = False,
    restart: bool = True,
    check_every: int = 10,
    polish: bool = False,
    regularizer: Regularizer | None = None,
) -> SolverResult:
    """ISTA: ``z ← shrink_{λ/L}(z − Wᵀ(Wz − y)/L)``; same arguments as :func:`fista`.

    ``restart`` has no effect (there is no momentum); ``backtracking`` and ``polish`` are off by
    default so that the iterates are the textbook ones (fixed step ``1/L``), whose energy never
    increases.
    """
    return _solve(Y, W, lam, locals(), accelerated=False)


def _solve(Y: Any, W: Any, lam: Any, options: dict, *, accelerated: bool) -> SolverResult:
    problem = prepare(Y, W, lam)
    max_iter = check_int(options["max_iter"], "max_iter", low=1)
    check_every = check_int(options["check_every"], "check_every", low=1)
    tol = options["tol"]
    if tol is None:
        tol = 1e-8 if problem.Y.dtype == torch.float64 else 1e-5
    tol = check_scalar(tol, "tol", low=0.0)
    reg = options["regularizer"]
    if reg is None:
        reg = get_regularizer(bool(options["nonneg"]))
    elif not isinstance(reg, Regularizer):
        raise TypeError(f"regularizer must be a Regularizer, got {type(reg).__name__}")
    z0 = options["z0"]
    z_init = None if z0 is None else prepare_code(z0, "z0", problem)
    lipschitz = options["lipschitz"]
    if lipschitz is not None:
        lipschitz = check_scalar(lipschitz, "lipschitz", low=0.0, low_inclusive=False)
    with torch.no_grad():
        out = proximal_gradient(
            problem.op,
            problem.Y,
            problem.lam,
            reg,
            accelerated=accelerated,
            max_iter=max_iter,
            tol=tol,
            z0=z_init,
            lipschitz=lipschitz,
            backtracking=options["backtracking"],
            restart=bool(options["restart"]),
            check_every=check_every,
            polish=bool(options["polish"]),
        )
    n = problem.numpy_out
    return SolverResult(
        z=to_output(out["z"], n),
        gap=to_output(out["gap"], n),
        energy=to_output(out["energy"], n),
        converged=to_output(out["converged"], n),
        n_iter_per_sample=to_output(out["n_iter"], n),
        n_iter=int(out["n_iter"].max()),
    )
