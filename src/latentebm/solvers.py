"""ISTA and FISTA for ``min_z ½‖y − Az‖² + λR(z)`` over any linear operator and regularizer.

Batched: every sample has its own momentum, restart and stopping decision. The loop touches the
operator once per iteration through ``AᵀA`` (the Gram product; for a dense dictionary a single
``n_atoms × n_atoms`` matmul), and keeps ``AᵀA`` of the extrapolated point by linearity. Every
``check_every`` iterations it computes the certified duality gap from the true residual, retires
the samples whose relative gap ``gap / P(z)`` is below ``tol`` (the working batch shrinks), and,
for dense dictionaries, tries to solve the problem exactly on the current support (the solution
is kept only where the gap certifies it is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._problem import prepare, prepare_code, to_output
from ._validation import check_int, check_scalar
from .objective import energy_and_gap
from .operators import DenseDictionary, LinearOperator, batch_dot, per_sample
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
    backtracking: bool = False,
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
    backtracking: find the step by backtracking line search instead (per sample).
    polish: for dense dictionaries, solve exactly on the identified support (certified).
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

    ``restart`` has no effect (there is no momentum); ``polish`` is off by default so that the
    iterates are the textbook ones, whose energy never increases.
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
            backtracking=bool(options["backtracking"]),
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


class _State:
    """The working (not yet converged) part of the batch."""

    def __init__(self, idx, Y, b, z, Gz, L):
        self.idx, self.Y, self.b = idx, Y, b
        self.z, self.Gz = z, Gz
        self.x, self.Gx = z, Gz
        self.t = torch.ones(Y.shape[0], dtype=Y.dtype, device=Y.device)
        self.signs = torch.zeros_like(z, dtype=torch.int8)
        self.L = L

    def keep(self, mask: torch.Tensor) -> None:
        for name in ("idx", "Y", "b", "z", "Gz", "x", "Gx", "t", "signs"):
            setattr(self, name, getattr(self, name)[mask])
        if self.L.dim() > 0:
            self.L = self.L[mask]


def proximal_gradient(
    op: LinearOperator,
    Y: torch.Tensor,
    lam: float,
    reg: Regularizer,
    *,
    accelerated: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-6,
    z0: torch.Tensor | None = None,
    lipschitz: float | None = None,
    backtracking: bool = False,
    restart: bool = True,
    check_every: int = 10,
    polish: bool = True,
) -> dict[str, torch.Tensor]:
    """The tensor-level solver behind :func:`fista` and :func:`ista` (inputs already validated).

    Returns a dict of tensors: ``z``, ``gap``, ``energy``, ``converged``, ``n_iter``.
    """
    batch = Y.shape[0]
    code_shape = (batch, *op.code_shape(tuple(Y.shape[1:])))
    z = torch.zeros(code_shape, dtype=Y.dtype, device=Y.device) if z0 is None else z0.clone()
    b = op.adjoint(Y)
    yy = batch_dot(Y, Y)
    if backtracking:
        L = _rayleigh_start(op, b) if lipschitz is None else torch.full_like(yy, lipschitz)
    elif lipschitz is None:
        L = op.lipschitz(tuple(Y.shape[1:]))
    else:
        L = torch.tensor(lipschitz, dtype=Y.dtype, device=Y.device)
    can_polish = polish and isinstance(op, DenseDictionary)
    out_z = z.clone()
    out_gap = torch.full_like(yy, float("inf"))
    out_energy = torch.full_like(yy, float("inf"))
    out_conv = torch.zeros(batch, dtype=torch.bool, device=Y.device)
    out_iter = torch.zeros(batch, dtype=torch.long, device=Y.device)
    state = _State(torch.arange(batch, device=Y.device), Y, b, z, op.gram(z), L)

    for k in range(1, max_iter + 1):
        _step(op, state, lam, reg, accelerated, restart, backtracking)
        if k % check_every and k != max_iter:
            continue
        energy, gap = energy_and_gap(op, state.Y, state.z, lam, reg)
        if can_polish:
            energy, gap = _polish(op, state, lam, reg, energy, gap, tol)
        done = gap <= tol * energy
        if lam == 0:
            done = _gradient_mapping_small(state, reg, tol)
        out_z[state.idx] = state.z
        out_gap[state.idx] = gap
        out_energy[state.idx] = energy
        out_conv[state.idx] = done
        out_iter[state.idx] = k
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = ~done
            state.keep(keep)
    return {
        "z": out_z,
        "gap": out_gap,
        "energy": out_energy,
        "converged": out_conv,
        "n_iter": out_iter,
    }


def _gradient_mapping_small(state: _State, reg: Regularizer, tol: float) -> torch.Tensor:
    """With λ = 0 the Lasso dual is degenerate (the gap is the whole energy), so stop when the
    proximal-gradient mapping ``‖z − prox(z − ∇f)‖`` is below ``tol·‖Aᵀy‖`` instead."""
    step = state.z - reg.prox(state.z - (state.Gz - state.b), 0.0)
    return batch_dot(step, step) <= tol * tol * batch_dot(state.b, state.b)


def _step(op, state: _State, lam, reg, accelerated, restart, backtracking) -> None:
    """One proximal-gradient step at the extrapolated point, then momentum and restart.

    Restart follows O'Donoghue & Candès' gradient scheme: momentum is dropped for a sample when
    it opposes the step just taken, ``⟨x − z⁺, z⁺ − z⟩ > 0``. Written with in-place updates on
    fresh tensors, since on CPU the elementwise passes cost as much as the Gram product.
    """
    while True:
        inv_L = 1.0 / (per_sample(state.L, state.x) if state.L.dim() else state.L)
        v = torch.sub(state.Gx, state.b).mul_(-inv_L).add_(state.x)
        z_new = reg.prox(v, lam * inv_L)
        Gz_new = op.gram(z_new)
        if not backtracking:
            break
        d = z_new - state.x
        curvature = batch_dot(d, Gz_new - state.Gx)
        too_long = curvature > state.L * batch_dot(d, d) * (1 + 1e-6)
        if not bool(too_long.any()):
            break
        state.L = torch.where(too_long, 2 * state.L, state.L)
    z_old, Gz_old = state.z, state.Gz
    state.z, state.Gz = z_new, Gz_new
    if not accelerated:
        state.x, state.Gx = z_new, Gz_new
        return
    t_new = 0.5 * (1 + torch.sqrt(1 + 4 * state.t * state.t))
    beta = (state.t - 1) / t_new
    step = z_new - z_old
    if restart:
        opposes = batch_dot(state.x.sub_(z_new), step) > 0
        beta = beta.masked_fill(opposes, 0.0)
        t_new = t_new.masked_fill(opposes, 1.0)
    beta = per_sample(beta, z_new)
    state.x = step.mul_(beta).add_(z_new)
    state.Gx = torch.sub(Gz_new, Gz_old).mul_(beta).add_(Gz_new)
    state.t = t_new


def _rayleigh_start(op: LinearOperator, b: torch.Tensor) -> torch.Tensor:
    """A per-sample lower estimate of ``λ_max(AᵀA)`` to start backtracking from."""
    v = torch.where(b == 0, torch.ones_like(b), b)
    return (batch_dot(v, op.gram(v)) / batch_dot(v, v)).clamp_min(torch.finfo(b.dtype).tiny)


def _polish(
    op: DenseDictionary,
    state: _State,
    lam: float,
    reg: Regularizer,
    energy: torch.Tensor,
    gap: torch.Tensor,
    tol: float,
    max_support: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``G_SS z_S = b_S − λ s_S`` on each sample's support ``S`` (signs ``s``).

    The candidate replaces ``z`` only where its certified gap is smaller, so the step can help
    but never hurt; once the support and signs are right it is exact to rounding.
    """
    signs = torch.sign(state.z).to(torch.int8)
    stable = (signs == state.signs).all(1)
    state.signs = signs
    size = (signs != 0).sum(1)
    eligible = stable & (size > 0) & (size <= max_support) & (gap > tol * energy)
    rows = torch.nonzero(eligible).flatten()
    if rows.numel() == 0:
        return energy, gap
    k = int(size[rows].max())
    z, b, Y = state.z[rows], state.b[rows], state.Y[rows]
    sub_signs = signs[rows]
    order = torch.argsort(sub_signs.abs(), dim=1, descending=True, stable=True)[:, :k]
    valid = torch.arange(k, device=order.device) < size[rows, None]
    G = op.gram_matrix()
    G_ss = G[order[:, :, None], order[:, None, :]]
    pair_valid = valid[:, :, None] & valid[:, None, :]
    eye = torch.eye(k, dtype=G.dtype, device=G.device).expand_as(G_ss)
    G_ss = torch.where(pair_valid, G_ss, eye)
    s = sub_signs.gather(1, order).to(z.dtype)
    rhs = torch.where(valid, b.gather(1, order) - lam * s, torch.zeros_like(s))
    # Solved in float64: the systems are small, and float32 would cap the accuracy at cond·eps.
    sol, info = torch.linalg.solve_ex(G_ss.double(), rhs.double().unsqueeze(-1))
    sol = sol.squeeze(-1).to(z.dtype)
    consistent = ((torch.sign(sol) == s) | ~valid).all(1) & torch.isfinite(sol).all(1)
    ok = (info == 0) & consistent
    if not bool(ok.any()):
        return energy, gap
    candidate = torch.zeros_like(z).scatter(1, order, torch.where(valid, sol, 0))
    cand_energy, cand_gap = energy_and_gap(op, Y, candidate, lam, reg)
    better = ok & (cand_gap < gap[rows])
    rows, candidate = rows[better], candidate[better]
    state.z[rows] = candidate
    state.Gz[rows] = op.gram(candidate)
    state.x[rows] = candidate
    state.Gx[rows] = state.Gz[rows]
    state.t[rows] = 1
    energy, gap = energy.clone(), gap.clone()
    energy[rows] = cand_energy[better]
    gap[rows] = cand_gap[better]
    return energy, gap
