"""The validated public entry points: :func:`solve` (the algorithm chosen by the problem's
structure), :func:`fista` and :func:`ista`, and the registry of methods behind ``solve``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._docs import fill_doc
from .._validation import check_bool, check_int, check_scalar
from ..operators import LinearOperator
from ..problem import Problem, prepare, prepare_code
from ..regularizers import Regularizer, get_regularizer
from .proximal_gradient import proximal_gradient
from .result import Callback, SolverResult

#: ``run(problem, regularizer, z0, tol, max_iter, callback, **options)`` at the tensor level
#: (validated inputs, under ``torch.no_grad()``), returning a tensor :class:`SolverResult`.
MethodFn = Callable[..., SolverResult]


@dataclass(frozen=True)
class Method:
    """One algorithm behind :func:`solve`.

    Attributes
    ----------
    name : str
        What ``method=`` names it by; reported as ``SolverResult.method``.
    run : MethodFn
        The tensor-level solver.
    unsupported : callable
        ``unsupported(operator, regularizer) -> str | None``: why the method cannot solve this
        problem (read from the structure the operator and regularizer report), or ``None``.
    preferred : callable
        ``preferred(problem, regularizer) -> bool``: whether ``"auto"`` should pick it.
    priority : int
        ``"auto"`` asks methods in increasing priority; the first preferred one runs.
    options : frozenset of str
        The extra keyword options ``run`` accepts.
    """

    name: str
    run: MethodFn
    unsupported: Callable[[LinearOperator, Regularizer], str | None] = lambda op, reg: None
    preferred: Callable[[Problem, Regularizer], bool] = lambda problem, reg: False
    priority: int = 100
    options: frozenset[str] = field(default_factory=frozenset)


METHODS: dict[str, Method] = {}
"""Every registered method, by name."""


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a new algorithm is a new file that calls this).

    Parameters
    ----------
    method : Method
        The method to register; its name must be new and not ``"auto"``.

    Returns
    -------
    Method
        ``method`` itself (so this can be used as a decorator-like call).
    """
    if method.name == "auto" or method.name in METHODS:
        raise ValueError(f"a solver method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


PG_OPTIONS = frozenset({"lipschitz", "backtracking", "restart", "check_every", "polish",
                        "extrapolate"})


def _proximal_gradient_method(accelerated: bool) -> MethodFn:
    def run(problem: Problem, reg: Regularizer, z0: torch.Tensor | None, *, tol: float,
            max_iter: int, callback: Callback | None, lipschitz: float | None = None,
            backtracking: bool | None = None, restart: bool = True, check_every: int = 10,
            polish: bool | None = None, extrapolate: bool = False) -> SolverResult:
        if lipschitz is not None:
            lipschitz = check_scalar(lipschitz, "lipschitz", low=0.0, low_inclusive=False)
        check_every = check_int(check_every, "check_every", low=1)
        return proximal_gradient(
            problem.op, problem.Y, problem.lam, reg, accelerated=accelerated, max_iter=max_iter,
            tol=tol, z0=z0, lipschitz=lipschitz,
            backtracking=(None if accelerated else False) if backtracking is None
            else check_bool(backtracking, "backtracking"),
            restart=check_bool(restart, "restart"), check_every=check_every,
            polish=accelerated if polish is None else check_bool(polish, "polish"),
            extrapolate=check_bool(extrapolate, "extrapolate"), callback=callback)
    return run


register_method(Method("fista", _proximal_gradient_method(True), priority=1000,
                       preferred=lambda problem, reg: True, options=PG_OPTIONS))
register_method(Method("ista", _proximal_gradient_method(False),
                       options=PG_OPTIONS - {"restart"}))  # no momentum to restart


@fill_doc
def solve(
    Y: Any,
    W: Any,
    lam: Any,
    *,
    method: str = "auto",
    tol: float | None = None,
    max_iter: int = 1000,
    z0: Any = None,
    nonneg: bool = False,
    regularizer: Regularizer | None = None,
    callback: Callback | None = None,
    **options: Any,
) -> SolverResult:
    """``argmin_z ½‖y − Wz‖² + λR(z)`` per sample, by the algorithm that suits the problem.

    Parameters
    ----------
    Y : array or tensor, shape (batch, n_features) or (batch, C, H, W)
        Signals (images with a convolutional operator).
    W : array, tensor or LinearOperator
        Dictionary ``(n_features, n_atoms)`` or an operator. A NumPy ``Y`` takes a tensor's or
        operator's device and dtype; a NumPy ``W`` takes a NumPy ``Y``'s precision.
    lam : float
        ``λ ≥ 0`` (the ½ convention of scikit-learn's ``sparse_encode`` and SPAMS; the
        lecture's λ is twice this one).
    method : str
        A name from :data:`METHODS` (``"fista"``, ``"ista"``, ...), or ``"auto"``: the first
        method, by priority, that supports the operator and regularizer and prefers this
        problem (size, structure); the choice is reported as ``result.method``.
    tol : float or None
        Relative certificate per sample at which a sample stops: the duality gap or, for an
        L1 penalty on a dictionary with ``WᵀW`` positive definite and a batch of at least 8
        samples per atom (``"gram_cd"``, and ``"fista"``/``"ista"``/``"cd"`` in float64), the
        strong-convexity bound of :mod:`~latentebm.solvers.strong_convexity` where smaller;
        by default 1e-8 in float64 and 1e-5 in float32.
    {max_iter_cap}
    z0 : array or tensor or None, shape (batch, *code_dims)
        Warm start (its negative entries set to zero with non-negative codes).
    nonneg : bool
        Constrain ``z ≥ 0`` (ignored when ``regularizer`` is given).
    regularizer : Regularizer or None
        Another penalty instead of (non-negative) L1.
    {solver_callback}
    **options
        Method-specific options (e.g. ``lipschitz``, ``restart``, ``polish`` for FISTA).

    {returns_solver_result}
    """
    check_method_name(method)
    problem = prepare(Y, W, lam)
    reg = _regularizer(regularizer, nonneg)
    chosen = resolve_method(method, problem, reg)
    unknown = set(options) - chosen.options
    if unknown:
        raise TypeError(f"method {chosen.name!r} takes no option(s) {sorted(unknown)}; "
                        f"besides tol, max_iter, z0, nonneg, regularizer and callback it takes "
                        f"{sorted(chosen.options)}")
    return _run(chosen, problem, reg, z0, tol, max_iter, callback, options)


@fill_doc
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
    extrapolate: bool = False,
    regularizer: Regularizer | None = None,
    callback: Callback | None = None,
) -> SolverResult:
    """FISTA (Beck & Teboulle 2009) with adaptive restart (O'Donoghue & Candès 2015).

    Parameters
    ----------
    Y, W, lam, tol, z0, nonneg, regularizer, callback
        As in :func:`solve`. With ``lam = 0`` (least squares) the gap is uninformative and the
        rule becomes a relative proximal-gradient norm ``‖z − prox(z − ∇f)‖ ≤ tol·‖Wᵀy‖``.
    {max_iter_cap}
    lipschitz : float or None
        A known bound on ``λ_max(WᵀW)``; by default a power-iteration estimate. A value far
        too small makes the iterates diverge: that raises ``FloatingPointError``.
    backtracking : bool or None
        Per-sample step sizes by backtracking, allowed to grow again (``L`` shrinks by 10 % a
        step and doubles where a step overshoots), so they follow the local curvature, which on
        a sparse support is often far below ``λ_max(WᵀW)``. ``None`` (default): on where
        ``lipschitz`` is not given, on the CPU (on a GPU its redo decision would synchronise
        with the host every iteration).
    restart : bool
        Adaptive (gradient-scheme) restart of the momentum.
    check_every : int
        How often (in iterations) the duality gap is checked.
    polish : bool
        Where the operator has an explicit Gram matrix and the penalty is L1: active-set rounds
        on the identified support (solve exactly on it, drop atoms whose sign flips, add atoms
        that violate optimality); a result is kept only where its duality gap is smaller.
        For convolutions on the CPU: coordinate descent on the working set of each image's
        codes once its gap is below 3e-2 (:mod:`~latentebm.solvers.conv_working_set`).
    extrapolate : bool
        Certify against the best dual point seen, including points extrapolated from the
        iterates just before each check (Massias et al. 2020), so the stop at ``tol`` may come
        sooner. Off by default: on the B1 benchmark (MNIST, 256 atoms) it saved at most one
        check of ten iterations for a few samples and made a float64 solve about 1.5× slower
        (it keeps six codes and gradients per sample in float64 and reads them every check).

    {returns_solver_result}
    """
    return solve(Y, W, lam, method="fista", max_iter=max_iter, tol=tol, z0=z0, nonneg=nonneg,
                 regularizer=regularizer, callback=callback, lipschitz=lipschitz,
                 backtracking=backtracking, restart=restart, check_every=check_every,
                 polish=polish, extrapolate=extrapolate)


@fill_doc
def ista(Y: Any, W: Any, lam: Any, **options: Any) -> SolverResult:
    """ISTA: ``z ← shrink_{λ/L}(z − Wᵀ(Wz − y)/L)``.

    Parameters
    ----------
    Y, W, lam
        As in :func:`solve`.
    **options
        The keyword arguments of :func:`fista` except ``restart`` (ISTA has no momentum).
        ``backtracking`` and ``polish`` are off by default, so that the iterates are the
        textbook ones (fixed step ``1/L``), whose energy never increases.

    {returns_solver_result}
    """
    return solve(Y, W, lam, method="ista", **options)


def check_tol(tol: float | None, dtype: torch.dtype) -> float:
    """The stopping tolerance ``tol`` checked (a finite number ≥ 0), or by default the one
    suited to the precision: 1e-8 in float64, 1e-5 otherwise.

    Parameters
    ----------
    tol : float or None
        The tolerance given.
    dtype : torch.dtype
        Dtype of the signals.

    Returns
    -------
    float
    """
    if tol is None:
        return 1e-8 if dtype == torch.float64 else 1e-5
    return check_scalar(tol, "tol", low=0.0)


def _regularizer(regularizer: Regularizer | None, nonneg: bool) -> Regularizer:
    if regularizer is None:
        return get_regularizer(check_bool(nonneg, "nonneg"))
    if not isinstance(regularizer, Regularizer):
        raise TypeError(f"regularizer must be a Regularizer, got {type(regularizer).__name__}")
    return regularizer


def check_method_name(method: Any) -> str:
    """``method`` checked to be ``"auto"`` or a registered name.

    Parameters
    ----------
    method : Any
        What the caller passed as ``method``.

    Returns
    -------
    str
    """
    if not isinstance(method, str) or (method != "auto" and method not in METHODS):
        raise ValueError(f"unknown method {method!r}; known: "
                         + ", ".join(["'auto'", *(repr(m) for m in sorted(METHODS))]))
    return method


def resolve_method(method: str, problem: Problem, reg: Regularizer) -> Method:
    """The :class:`Method` that ``method`` names for this problem (``"auto"``: the first
    preferred one by priority); ``ValueError`` naming both when it cannot solve the problem.

    Parameters
    ----------
    method : str
        ``"auto"`` or a name from :data:`METHODS` (see :func:`check_method_name`).
    problem : Problem
        The validated problem (its operator, signals and λ decide ``"auto"``).
    reg : Regularizer
        The penalty.

    Returns
    -------
    Method
    """
    chosen = _choose(problem, reg) if method == "auto" else METHODS[method]
    reason = chosen.unsupported(problem.op, reg)
    if reason is not None:
        raise ValueError(f"method {chosen.name!r} cannot solve this problem "
                         f"({type(problem.op).__name__} with {reg!r}): {reason}")
    return chosen


def _choose(problem: Problem, reg: Regularizer) -> Method:
    for method in sorted(METHODS.values(), key=lambda m: (m.priority, m.name)):
        if method.unsupported(problem.op, reg) is None and method.preferred(problem, reg):
            return method
    return METHODS["fista"]


def _run(method: Method, problem: Problem, reg: Regularizer, z0: Any, tol: float | None,
         max_iter: int, callback: Callback | None, options: dict[str, Any]) -> SolverResult:
    max_iter = check_int(max_iter, "max_iter", low=1)
    tol = check_tol(tol, problem.Y.dtype)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    reg.check_code_shape(tuple(problem.op.code_shape(tuple(problem.Y.shape[1:]))))
    z_init = None if z0 is None else prepare_code(z0, "z0", problem)
    if z_init is not None and reg.nonneg:  # a method may take a feasible start as its answer
        z_init = z_init.clamp_min(0)
    with torch.no_grad():
        result = method.run(problem, reg, z_init, tol=tol, max_iter=max_iter,
                            callback=callback, **options)
    _check_finite(result, method.name, problem.Y.dtype)
    return result.to_output(problem.numpy_out)


def _check_finite(result: SolverResult, name: str, dtype: torch.dtype) -> None:
    """A non-finite energy is never returned as a result, whichever method ran (FISTA and ADMM
    also stop at the first one inside their loops)."""
    bad = int((~torch.isfinite(result.energy)).sum())
    if bad:
        raise FloatingPointError(
            f"method {name!r}: the energy of {bad} sample(s) is not finite; the signals or the "
            f"dictionary hold values too large for {str(dtype).replace('torch.', '')} (their "
            "squared norms overflow): rescale them")


__all__ = ["solve", "fista", "ista", "Method", "METHODS", "register_method", "resolve_method",
           "check_method_name"]
