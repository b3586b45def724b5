"""Solvers for ``min_z ½‖y − Az‖² + λR(z)`` and its relatives: one interface, the algorithm
chosen by the problem's structure.

Every algorithm is one file and returns a :class:`SolverResult` (codes, per-sample energy,
duality-gap certificate, convergence, iterations, the method's name), at the tensor level as at
the public entry points. Solvers read structure from the operator and the regularizer
(``op.gram_matrix()``, ``reg.is_l1``, ``reg.nonneg`` ...), never from their types.

- :func:`solve` (``method="auto"`` or a name), :func:`fista`, :func:`ista`: validated entry
  points (:mod:`.api`).
- :func:`proximal_gradient`: the batched ISTA/FISTA loop (:mod:`.proximal_gradient`) with the
  exact active-set finish (:mod:`.active_set`).
- ``solve(method="gram_cd")``: compiled per-sample coordinate descent with an exact Newton
  finish, the CPU choice for dense L1 problems (:mod:`.gram_cd`).
- :func:`admm_fourier`: ADMM in the Fourier domain for convolutional operators
  (:mod:`.admm_fourier`), with dual points from :mod:`.dual` (shared by every method).
- :func:`smooth_proximal_gradient` / :func:`autograd_proximal_gradient`: accelerated proximal
  gradient for a smooth ``f`` given as a function (:mod:`.smooth`).

Adding an algorithm: write ``solvers/NAME.py`` with a tensor-level
``run(problem, regularizer, z0, *, tol, max_iter, callback, **options) -> SolverResult``, call
``register_method(Method("NAME", run, unsupported=..., preferred=..., priority=...,
options=frozenset({...})))`` at the bottom of that file, and import the file below. ``"auto"``
then considers it: the first method by priority whose ``unsupported(op, reg)`` is ``None`` and
whose ``preferred(problem, reg)`` is true runs (``"fista"`` is the fallback, priority 1000).
"""

from . import coordinate_descent as _coordinate_descent  # noqa: F401  (registers "cd")
from . import gram_cd as _gram_cd  # noqa: F401  (registers "gram_cd")
from .admm_fourier import admm_fourier  # registers "admm"
from .api import METHODS, Method, fista, ista, register_method, solve
from .proximal_gradient import proximal_gradient
from .result import Callback, IterationState, NotConvergedWarning, SolverResult
from .smooth import autograd_proximal_gradient, smooth_proximal_gradient

__all__ = [
    "NotConvergedWarning",
    "solve",
    "fista",
    "ista",
    "Method",
    "METHODS",
    "register_method",
    "proximal_gradient",
    "admm_fourier",
    "smooth_proximal_gradient",
    "autograd_proximal_gradient",
    "SolverResult",
    "IterationState",
    "Callback",
]
