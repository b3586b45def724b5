"""The batched proximal-gradient loop behind :func:`latentebm.fista` and :func:`latentebm.ista`.

``min_z ½‖y − Az‖² + λR(z)`` for a batch of signals: every sample has its own momentum, restart,
step size and stopping decision. The loop touches the operator once per iteration through the
Gram product ``AᵀA`` (for a dense dictionary one ``n_atoms × n_atoms`` matmul) and keeps
``AᵀA x`` of the extrapolated point by linearity. Every ``check_every`` iterations it evaluates
each sample's duality gap from quantities it already holds (``Aᵀr = Aᵀy − AᵀAz``), retires the
samples whose relative gap is below ``tol`` (the working batch shrinks) and, for dense
dictionaries, tries to solve exactly on the identified support (:mod:`.active_set`).
With ``extrapolate=True`` the gap is certified against the best dual value seen, plain or
extrapolated from the iterates just before each check (:class:`~.dual.DualExtrapolation`, in
code space: no operator call). In float64 those are the returned energies and gaps; in lower
precision the energies and plain gaps are recomputed once at the end from the true residual,
and the gap against the best dual value is kept where it is smaller.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .._docs import fill_doc
from ..objective import CANCELLATION, energy_and_gap
from ..operators import GRAM_MAX_ATOMS, LinearOperator, batch_dot, per_sample
from ..regularizers import Regularizer
from .active_set import ATTEMPT_BELOW, support_solve
from .conv_working_set import WorkingSetFinish
from .dual import DualExtrapolation, gap_to_dual
from .local_dual import LocalRescaling, local_rescaling
from .result import BatchOutputs, Callback, IterationState, SolverResult
from .strong_convexity import energy_and_certificate, lasso_strong_convexity

STEP_SHRINK = 0.9
"""With backtracking, ``L`` is multiplied by this every step, so the step follows the local
curvature (on a sparse support it is often far below ``λ_max(AᵀA)``) instead of only growing."""


class _State:
    """The working (not yet retired) part of the batch.

    ``z``: iterate, ``x``: extrapolated point, ``Gz``/``Gx``: their Gram products, ``b = Aᵀy``,
    ``yy = ‖y‖²``, ``t``: momentum counter, ``L``: step-size inverse (scalar or per sample),
    ``signs``/``tried``: the sign pattern at the last check and whether it was solved exactly.
    """

    FIELDS = ("idx", "Y", "yy", "b", "z", "Gz", "x", "Gx", "t", "signs", "tried")

    def __init__(self, Y: torch.Tensor, b: torch.Tensor, z: torch.Tensor, Gz: torch.Tensor,
                 L: torch.Tensor) -> None:
        batch = Y.shape[0]
        self.idx = torch.arange(batch, device=Y.device)
        self.Y, self.yy, self.b = Y, batch_dot(Y, Y), b
        self.z, self.Gz = z, Gz
        self.x, self.Gx = z, Gz
        self.t = torch.ones(batch, dtype=Y.dtype, device=Y.device)
        self.signs = torch.zeros_like(z, dtype=torch.int8)
        self.tried = torch.zeros(batch, dtype=torch.bool, device=Y.device)
        self.L = L

    def keep(self, mask: torch.Tensor) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name)[mask])
        if self.L.dim() > 0:
            self.L = self.L[mask]


@fill_doc
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
    backtracking: bool | None = None,
    restart: bool = True,
    check_every: int = 10,
    polish: bool = True,
    extrapolate: bool = False,
    callback: Callback | None = None,
) -> SolverResult:
    """The tensor-level solver (inputs already validated; call under ``torch.no_grad()``).

    Parameters
    ----------
    {op_decoder}
    {Y_signals}
    {lam_nonneg}
    {reg_penalty}
    accelerated : bool
        FISTA (momentum) or ISTA.
    {gap_stopping}
    z0 : torch.Tensor or None, shape (batch, *code_dims)
        Warm start (zeros by default).
    lipschitz : float or None
        A known bound on ``λ_max(AᵀA)``.
    backtracking : bool or None
        Per-sample ``L`` from a Rayleigh quotient (or ``lipschitz``), shrunk by
        :data:`STEP_SHRINK` every step and doubled where a step overshoots; otherwise the fixed
        ``L = lipschitz`` or a power-iteration bound on ``λ_max(AᵀA)``. ``None``: backtracking
        where no ``lipschitz`` is given, on the CPU only (a redone step costs one Gram product
        of the samples redone; on convolutional problems, where ``λ_max(AᵀA)`` far exceeds the
        curvature along sparse codes, it needs 3–6× fewer iterations: B3 in ``benchmarks/``).
        On a GPU the fixed step is the default, because deciding which steps to redo reads a
        flag back to the host every iteration, while the fixed-step loop synchronises only at
        the gap checks (every ``check_every``).
    restart : bool
        Adaptive restart of the momentum.
    polish : bool
        The exact active-set finish, where the operator has an explicit Gram matrix and the
        penalty is an L1 norm; for convolutions on the CPU, coordinate descent on the codes'
        working set (:mod:`.conv_working_set`).
    extrapolate : bool
        Certify the gap against the best dual value seen, including points extrapolated from
        the iterates just before each check (tighter than the current residual alone, so the
        loop may stop sooner at the same ``tol``); ignored when ``lam == 0``. It keeps six codes
        and six gradients per sample in float64 and costs several passes over them per check.
    {solver_callback}

    Returns
    -------
    SolverResult
        Tensors; ``converged`` is false wherever the energy or gap is not finite;
        ``lipschitz`` the step-size inverse each sample ended with ``(batch,)`` with
        backtracking, else the fixed one ``()``.

    Raises
    ------
    FloatingPointError
        When the iterates diverge (a fixed step ``1/lipschitz`` that is too long).
    """
    batch = Y.shape[0]
    code_shape = (batch, *op.code_shape(tuple(Y.shape[1:])))
    z = torch.zeros(code_shape, dtype=Y.dtype, device=Y.device) if z0 is None else z0.clone()
    b = op.adjoint(Y)
    # the finish builds the n_atoms² Gram matrix: not for very wide dictionaries (16 000 atoms
    # of 50 features took 2.2 GB for a batch of 4)
    explicit_gram = op.has_gram_matrix and op.n_atoms <= GRAM_MAX_ATOMS
    mu = lasso_strong_convexity(op, Y, lam, reg)
    if backtracking is None:
        backtracking = lipschitz is None and Y.device.type == "cpu"
    if backtracking:
        L = _rayleigh_start(op, b) if lipschitz is None else b.new_full((batch,), lipschitz)
    elif lipschitz is None:
        L = op.lipschitz(tuple(Y.shape[1:]))
    else:
        L = torch.tensor(lipschitz, dtype=Y.dtype, device=Y.device)
    # the finish solves the L1 optimality system, so other penalties skip it; it is tried only
    # on gaps between tol and ATTEMPT_BELOW, so a looser tol never reaches it
    can_polish = polish and lam > 0 and explicit_gram and reg.is_l1 and tol < ATTEMPT_BELOW
    # convolutions: coordinate descent on a working set (:mod:`.conv_working_set`)
    finish = (WorkingSetFinish.when_applicable(op, Y, lam, reg, tol)
              if polish and not can_polish else None)
    out = BatchOutputs(z)
    state = _State(Y, b, z, op.gram(z), L)
    final_L = L.clone()
    local = local_rescaling(op, lam, reg)
    dual = DualExtrapolation(Y, lam, reg, Aty=b, local=local, adjoint=op.adjoint,
                             decode=op.decode) if (
        extrapolate and lam > 0 and not reg.is_constraint) else None
    # without the extrapolation, the best dual value of the pixelwise-rescaled residuals
    local_best = (torch.full((batch,), -float("inf"), dtype=torch.float64, device=Y.device)
                  if dual is None and local is not None else None)

    for k in range(1, max_iter + 1):
        _step(op, state, lam, reg, accelerated, restart, backtracking)
        if k % check_every and k != max_iter:
            if dual is not None:
                _record_burst(dual, state, k, check_every)
            if callback is not None:
                callback(k, IterationState(k, batch, state.z, state.idx))
            continue
        energy = gap = None
        if lam == 0:
            finite = torch.isfinite(state.z).flatten(1).all(1)
            done = _gradient_mapping_small(state, reg, tol) & finite
        else:
            energy, gap = _running_energy_and_gap(op, state, lam, reg, mu, dual, local,
                                                  local_best)
            finite = torch.isfinite(energy) & torch.isfinite(gap)
            if can_polish:
                jumped = support_solve(op, state, lam, reg, energy, gap, tol, mu)
                if dual is not None:
                    dual.restart(state.idx[jumped])
            elif finish is not None:
                _take_finish(finish, op, state, energy, gap, dual, local_best)
            done = (gap <= tol * energy) & torch.isfinite(gap)
        # the one host synchronisation of a check
        all_finite, all_done, any_done = torch.stack(
            [finite.all(), done.all(), done.any()]).tolist()
        if not all_finite:
            _raise_diverged(op, state, finite, k, lipschitz)
        if callback is not None:
            callback(k, IterationState(k, batch, state.z, state.idx, energy, gap))
        out.record(k, state.idx, state.z, done, energy, gap)
        if state.L.dim() > 0:  # backtracking: each sample's step as it retires
            final_L[state.idx] = state.L
        if all_done:
            break
        if any_done:
            state.keep(~done)
    if lam == 0 or Y.dtype != torch.float64:
        out.energy, plain_gap = energy_and_gap(op, Y, out.z, lam, reg)
        best = dual.best if dual is not None else local_best
        out.gap = plain_gap if best is None else torch.minimum(
            plain_gap, gap_to_dual(out.energy, best, batch_dot(Y, Y)))
    elif lam > 0:
        _revalue_cancelled(op, Y, out, lam, reg, mu)
    if lam > 0:
        out.converged = out.gap <= tol * out.energy
    return replace(out.result("fista" if accelerated else "ista"), lipschitz=final_L)


def _take_finish(finish: WorkingSetFinish, op: LinearOperator, state: _State,
                 energy: torch.Tensor, gap: torch.Tensor, dual: DualExtrapolation | None,
                 local_best: torch.Tensor | None) -> None:
    """Where the working-set finish certifies a smaller gap, its codes become the iterate (the
    momentum restarts) and its dual value the best seen; ``energy`` and ``gap`` ``(n,)`` are
    updated in place."""
    candidates = finish(state.idx, state.z, energy, gap)
    if candidates is None:
        return
    into, z_new, energy_new, gap_new, dual_new = candidates
    z_new = z_new.to(state.z)
    G = op.gram(z_new)
    state.z[into], state.x[into], state.Gz[into], state.Gx[into] = z_new, z_new, G, G
    state.t[into] = 1
    energy[into], gap[into] = energy_new.to(energy), gap_new.to(gap)
    rows = state.idx[into]
    best = dual.best if dual is not None else local_best
    if dual is not None:
        dual.restart(rows)
    if best is not None:
        best[rows] = torch.maximum(best[rows], dual_new.to(best))


def _revalue_cancelled(op: LinearOperator, Y: torch.Tensor, out: BatchOutputs, lam: float,
                       reg: Regularizer, mu: float) -> None:
    """In float64 the loop measures ``‖r‖²`` in code space, which loses the digits of a
    residual much smaller than the signal (a signal on one atom times 300 at λ = 1e-12: an energy
    reported 0.5 % below the codes' own, certified to 1e-6). Samples whose ``‖r‖²`` is below
    :data:`~latentebm.objective.CANCELLATION` ``‖y‖²`` get the energy and gap of the residual
    itself, or its strong-convexity bound where ``mu > 0`` and smaller (``out``'s ``(batch,)``
    entries, overwritten; one host synchronisation)."""
    rr = 2 * (out.energy - lam * reg.value(out.z))
    rows = (rr < CANCELLATION * batch_dot(Y, Y)).nonzero().flatten()
    if rows.numel():
        z = out.z[rows]
        r = Y[rows] - op.decode(z)
        c = op.adjoint(r)
        out.energy[rows], out.gap[rows] = energy_and_certificate(batch_dot(r, r), c, z, lam,
                                                                 reg, mu)


def _raise_diverged(op: LinearOperator, state: _State, finite: torch.Tensor, iteration: int,
                    lipschitz: float | None) -> None:
    """Non-finite iterates or energies mean the iterates blew up: a fixed step longer than
    ``2/λ_max``, or values beyond the precision. Never reported as a result."""
    bad = int((~finite).sum())
    what = f"the iterates or energy of {bad} sample(s) are not finite at iteration {iteration}"
    if lipschitz is not None:
        bound = float(op.lipschitz(tuple(state.Y.shape[1:])))
        raise FloatingPointError(
            f"the solver diverged: {what}; lipschitz={lipschitz:g} is below λ_max(WᵀW) ≈ "
            f"{bound:.4g}, so the step 1/lipschitz is too long. Pass lipschitz >= {bound:.4g}, "
            "or leave it None (estimated, or per-sample backtracking)."
        )
    raise FloatingPointError(
        f"the solver diverged: {what}, although the step came from the operator's own bound; "
        "the operator, the signals or the warm start z0 hold values too large for this "
        "precision."
    )


def _running_energy_and_gap(
    op: LinearOperator, state: _State, lam: float, reg: Regularizer, mu: float,
    dual: DualExtrapolation | None, local: LocalRescaling | None,
    local_best: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy and duality gap of the working samples, reusing ``AᵀA z``: ``Aᵀr = Aᵀy − AᵀAz``.

    ``‖r‖²`` comes from ``‖y‖² − 2⟨Aᵀy, z⟩ + ⟨z, AᵀAz⟩`` in float64 and from the residual itself
    in lower precision, where that expansion would cancel too many digits. With ``dual`` the gap
    is the smaller of the plain one and ``P(z)`` minus the best dual value seen; without it but
    with ``local`` (convolutions), against the best value ``local_best`` ``(batch,)`` (updated
    in place) of the residuals rescaled pixel by pixel. With ``mu > 0``
    (:func:`~.strong_convexity.strong_convexity`), the strong-convexity bound where smaller.
    """
    c = state.b - state.Gz
    r = None
    if state.Y.dtype == torch.float64:
        rr = state.yy - 2 * batch_dot(state.b, state.z) + batch_dot(state.z, state.Gz)
    else:
        r = state.Y - op.decode(state.z)
        rr = batch_dot(r, r)
    energy, gap = energy_and_certificate(rr.clamp_min(0), c, state.z, lam, reg, mu)
    if dual is not None:
        best = dual.update(state.z, c, state.idx)
        gap = torch.minimum(gap, gap_to_dual(energy, best, dual.yy[state.idx]))
    elif local is not None:
        r = state.Y - op.decode(state.z) if r is None else r
        best = torch.maximum(local_best[state.idx], local.dual_value(state.Y, r, c))
        local_best[state.idx] = best
        gap = torch.minimum(gap, gap_to_dual(energy, best, state.yy))
    return energy, gap


def _record_burst(dual: DualExtrapolation, state: _State, k: int, check_every: int) -> None:
    """Record the ``K`` iterates before each check, so the check extrapolates from ``K + 1``
    consecutive iterates (the last is recorded by the check itself); a longer spacing would
    need ``(K + 1)·check_every`` iterations before the first extrapolated point."""
    before_check = check_every - k % check_every
    if before_check > dual.K:
        return
    if before_check == dual.K and check_every > dual.K:
        dual.restart(state.idx)
    dual.record(state.z, state.b - state.Gz, state.idx)


def _gradient_mapping_small(state: _State, reg: Regularizer, tol: float) -> torch.Tensor:
    """With λ = 0 the Lasso dual is degenerate (the gap is the whole energy), so stop when the
    proximal-gradient mapping ``‖z − prox(z − ∇f)‖`` is below ``tol·‖Aᵀy‖`` instead."""
    step = state.z - reg.prox(state.z - (state.Gz - state.b), 0.0)
    small = batch_dot(step, step) <= tol * tol * batch_dot(state.b, state.b)
    return small & torch.isfinite(state.z).flatten(1).all(1)


def _step(op, state: _State, lam, reg, accelerated, restart, backtracking) -> None:
    """One proximal-gradient step at the extrapolated point, then momentum and restart.

    Restart follows O'Donoghue & Candès' gradient scheme: momentum is dropped for a sample when
    it opposes the step just taken, ``⟨x − z⁺, z⁺ − z⟩ > 0``. Written with in-place updates on
    fresh tensors, since on CPU the elementwise passes cost as much as the Gram product.
    """
    if backtracking:
        state.L = state.L * STEP_SHRINK
    inv_L = 1.0 / (per_sample(state.L, state.x) if state.L.dim() else state.L)
    v = torch.addcmul(state.x, torch.sub(state.Gx, state.b), -inv_L)
    z_new = reg.prox(v, lam * inv_L)
    Gz_new = op.gram(z_new)
    if backtracking:
        _backtrack(op, state, lam, reg, z_new, Gz_new)
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
    state.x = torch.addcmul(z_new, step, beta)
    state.Gx = torch.lerp(Gz_new, Gz_old, -beta)
    state.t = t_new


def _backtrack(op, state: _State, lam, reg, z_new: torch.Tensor, Gz_new: torch.Tensor) -> None:
    """Redo, in place, the steps that overshoot the curvature along them, ``⟨d, AᵀAd⟩ > L‖d‖²``
    with ``d = z⁺ − x``: those samples' ``L`` doubles until it does not (only they are redone)."""
    x, Gx, L, rows = state.x, state.Gx, state.L, None
    while True:
        d = z_new - x if rows is None else z_new[rows] - x
        Gd = (Gz_new if rows is None else Gz_new[rows]) - Gx
        too_long = batch_dot(d, Gd) > L * batch_dot(d, d) * (1 + 1e-6)
        if not bool(too_long.any()):
            return
        rows = torch.nonzero(too_long).flatten() if rows is None else rows[too_long]
        state.L[rows] = 2 * state.L[rows]
        x, Gx, L = state.x[rows], state.Gx[rows], state.L[rows]
        inv_L = 1.0 / per_sample(L, x)
        v = torch.addcmul(x, torch.sub(Gx, state.b[rows]), -inv_L)
        z_new[rows] = reg.prox(v, lam * inv_L)
        Gz_new[rows] = op.gram(z_new[rows])


def _rayleigh_start(op: LinearOperator, b: torch.Tensor) -> torch.Tensor:
    """A per-sample lower estimate of ``λ_max(AᵀA)`` to start backtracking from."""
    tiny = torch.finfo(b.dtype).tiny
    v = torch.where(b == 0, torch.ones_like(b), b)
    quotient = batch_dot(v, op.gram(v)) / batch_dot(v, v)
    # the quotient does not depend on the scale of v, its sums of squares do: where they
    # overflowed or underflowed, again with v divided by its largest entry
    v = v / per_sample(v.abs().flatten(1).amax(1).clamp_min(tiny), v)
    scaled = batch_dot(v, op.gram(v)) / batch_dot(v, v)
    ok = torch.isfinite(quotient) & (quotient > 0)
    return torch.where(ok, quotient, scaled).clamp_min(tiny)
