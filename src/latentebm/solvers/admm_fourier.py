"""ADMM in the Fourier domain for convolutional sparse coding (Wohlberg, IEEE TIP 2016).

``min_z ½‖y − Σ_m d_m * z_m‖² + λR(z)`` for operators that report a :class:`FourierEmbedding`
(``op.fourier_embedding(hw)``): a circular convolution on an FFT grid, per frequency a
``channels × n_atoms`` matrix ``D̂``. The splitting ``x = y`` (codes ``x``, sparse copy ``y``)
makes the ``x`` update one linear system per frequency, ``(D̂ᴴD̂ + σI) x̂ = b̂``, solved in closed
form by the Woodbury identity through a ``channels × channels`` inverse (for one channel the
Sherman–Morrison division ``1 / (σ + ‖d̂‖²)``). With over-relaxation (``relax``) and, by default,
residual balancing of the penalty ρ. Each image has its own ρ, so an image's codes do not depend
on the other images of the batch (a batch split between processes gives the same codes).
On the CPU with circular boundaries an iteration is an ``rfft2``, one numba pass that solves and
packs pairs of code maps into complex maps (one-channel images), a complex ``ifft2`` of half as
many maps in place of ``irfft2``, and one numba pass for the relaxation, the prox, the multiplier
update and the next right-hand side (:mod:`._admm_kernel`).

Boundaries:

- circular (the embedding's regions are the whole grid): the plain splitting ``x = y``,
  ``σ = ρ``.
- anything else (the default ``"full"`` boundary): the masked, decoupled formulation of
  SPORCO's ``ConvBPDNMaskDcpl``: ``D x − y₀ = s̃`` and ``x − y₁ = 0``, with the data term
  ``½‖M y₀‖²`` on the image region ``M`` and ``y₁`` held to the code region, so ``σ = 1``
  and the factorisation never changes with ρ.

Kernel scale: the splitting weighs ``Dx`` against ``x``, so kernels far from unit norm slow it
(two 3×3 kernels of norms 1 and 100, ``"full"`` boundary: a relative error of 0.19 after 3000
iterations in float64, divergence in float32). Kernels whose root-mean-square norm ``c`` is not 1
are therefore solved as the equivalent problem ``D/c``, ``λ/c``, codes ``c·z`` (same energies,
same dual values), which reaches 2e-6 in 1000 iterations there, in float32 too.

Certificate (the only host synchronisation besides reading the kernel scale once): the energy
of the sparse iterate ``y`` and the best dual value seen, over the dual points built from the
residual ``y − D x`` at ``x`` (for circular boundaries ``Dᵀ(y − Dx) = ρ(x − y + u)`` costs
nothing), its dual extrapolation (:mod:`.dual`, whose history is recorded every
``check_every`` iterations) and the better of the two rescaled pixel by pixel
(:mod:`.local_dual`). The certificate itself is evaluated when
:class:`~.check_schedule.CheckSchedule` predicts a crossing of ``tol`` from each image's gaps
(``benchmarks/results/check_schedule.md``). Once an image's gap is below
:data:`~.conv_working_set.ATTEMPT_BELOW`, coordinate descent on the working set of its codes
(:mod:`.conv_working_set`) finishes it on the CPU: on B3 the run certifies 1e-4 after 50
iterations and the finish, 0.84× the time of the run stopped by an oracle at the true error
1e-4 (96 iterations), where the certificate alone needed 200. Converged samples retire from the
working batch.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .._docs import fill_doc
from .._validation import check_bool, check_int, check_scalar
from ..operators import LinearOperator, batch_dot
from ..problem import Problem
from ..regularizers import Regularizer
from ._numba_threads import parallel_loops_unusable, use_torch_threads
from .api import Method, register_method
from .check_schedule import CheckSchedule
from .conv_working_set import WorkingSetFinish
from .dual import DualExtrapolation
from .local_dual import local_rescaling
from .result import BatchOutputs, Callback, IterationState, SolverResult

RESIDUAL_RATIO = 10.0
"""ρ is rebalanced when the normalised primal and dual residuals differ by more than this."""
MAX_SCALING = 100.0
"""The largest factor ρ changes by at one rebalancing."""
REBALANCE_EVERY = 10
"""Iterations between two rebalancings of ρ (independent of the certificate checks)."""
DEFAULT_RHO_PER_LAM = 10.0
"""The default initial penalty is ``DEFAULT_RHO_PER_LAM · λ + 1``."""
UNIT_SCALE_TOLERANCE = 1e-6
"""Kernels whose root-mean-square norm is within this of 1 are solved as given."""


class _Factor:
    """``(D̂ᴴD̂ + σI)⁻¹`` per frequency by Woodbury, applied in place to a right-hand side ``b``
    already divided by ``σ``: ``σ(D̂ᴴD̂ + σI)⁻¹ b = b − D̂ᴴ(σI + D̂D̂ᴴ)⁻¹D̂ b``; ``σ`` is one
    number per image, ``(B,)``."""

    def __init__(self, emb, sigma: torch.Tensor) -> None:
        self.emb = emb
        spec = emb.spectrum
        self.conj_spectrum = spec.conj().resolve_conj()
        if spec.shape[1] == 1:
            self.power = spec.abs().square().sum(0)[0]
        else:
            self.outer = torch.einsum("mcyx,mdyx->yxcd", spec, spec.conj())
            self.eye = torch.eye(spec.shape[1], dtype=spec.dtype, device=spec.device)
        self.set_sigma(sigma)

    def set_sigma(self, sigma: torch.Tensor) -> None:
        """Refactor for the per-image ``σ`` ``(B,)`` (or ``(1,)``, one ``σ`` for every image)."""
        if self.emb.spectrum.shape[1] == 1:
            self.inner = 1.0 / (sigma[:, None, None, None] + self.power)
        else:
            inv = torch.linalg.inv(self.outer + sigma[:, None, None, None, None] * self.eye)
            self.inner = inv.permute(0, 3, 4, 1, 2)

    def keep(self, mask: torch.Tensor) -> None:
        """Keep the factors of the images ``mask`` ``(B,)`` selects."""
        self.inner = self.inner[mask]

    def solve_(self, b_f: torch.Tensor) -> torch.Tensor:
        """Overwrite ``b_f`` ``(B, n_atoms, gh, gw // 2 + 1)`` (the right-hand side over σ)
        with the solution; returns it."""
        t = self.emb.synthesis(b_f)
        if self.emb.spectrum.shape[1] == 1:
            t.mul_(self.inner)
        else:
            t = (self.inner * t[:, None]).sum(2)
        for c in range(t.shape[1]):
            b_f.addcmul_(self.conj_spectrum[:, c], t[:, c : c + 1], value=-1)
        return b_f


class _State:
    """The working part of the batch. ``y`` and ``u`` live on the FFT grid; ``rho`` is each
    image's penalty ``(B,)``; ``rhs`` holds ``y − u`` where the fused CPU step keeps it."""

    FIELDS = ("idx", "Y", "s_grid", "b_f", "y", "u", "rhs", "y0", "u0", "rho")

    def __init__(self, **fields: torch.Tensor | None) -> None:
        for name in self.FIELDS:
            setattr(self, name, fields[name])

    def keep(self, mask: torch.Tensor) -> None:
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[mask])


@fill_doc
def admm_fourier(
    op: LinearOperator,
    Y: torch.Tensor,
    lam: float,
    reg: Regularizer,
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    z0: torch.Tensor | None = None,
    rho: float | None = None,
    rho_per_lam: float = DEFAULT_RHO_PER_LAM,
    relax: float = 1.8,
    adaptive: bool = True,
    check_every: int = 10,
    callback: Callback | None = None,
) -> SolverResult:
    """The tensor-level ADMM (inputs already validated; call under ``torch.no_grad()``).

    Parameters
    ----------
    op : LinearOperator
        An operator with ``fourier_embedding((H, W))`` (a convolutional dictionary).
    Y : torch.Tensor, shape (batch, channels, H, W)
        Images.
    {lam_nonneg}
    reg : Regularizer
        A penalty with a closed-form prox (L1 or non-negative L1).
    {gap_stopping}
        Here ``check_every`` is the spacing of the dual extrapolation's history; the gap
        itself is evaluated at some of those iterations (see the module's description), and
        the ``callback`` sees energies and gaps only there.
    z0 : torch.Tensor or None, shape (batch, n_atoms, H', W')
        Warm start of the sparse codes.
    rho : float or None
        Initial penalty of every image (in the problem with unit-scale kernels, see the
        module's description); by default ``cλ/s + 1`` with ``c = rho_per_lam``,
        ``s`` the image's largest magnitude where it exceeds 1 (else 1). SPORCO's default
        ``50λ + 1`` (Wohlberg's) is residual-balanced too, yet on three Kodak images at three λ
        it needed 1.05–1.65× the iterations of ``c = 10`` to reach a relative error of 1e-4 and
        1.7–2.8× to certify a relative gap of 1e-4 (``benchmarks/results/admm_penalty.md``).
    rho_per_lam : float
        The slope ``c`` of the default initial penalty (when ``rho`` is None).
    relax : float
        Over-relaxation ``α`` in ``(0, 2)``.
    adaptive : bool
        Residual balancing of each image's ρ every :data:`REBALANCE_EVERY` iterations.
    {solver_callback}

    Returns
    -------
    SolverResult
        ``z`` the sparse iterate ``y``; ``gap`` an upper bound on ``E(z) − min E``.
    """
    options = dict(max_iter=max_iter, tol=tol, rho=rho, rho_per_lam=rho_per_lam, relax=relax,
                   adaptive=adaptive, check_every=check_every)
    scale = _kernel_scale(op)
    if scale == 1.0:
        return _admm(op, Y, lam, reg, z0=z0, callback=callback, **options)
    result = _admm(op.scaled(1 / scale), Y, lam / scale, reg,
                   z0=None if z0 is None else z0 * scale,
                   callback=None if callback is None else _rescaled_callback(callback, scale),
                   **options)
    return replace(result, z=result.z / scale)


def _kernel_scale(op: LinearOperator) -> float:
    """The root-mean-square norm ``c`` of the kernels, or 1 where it is within
    :data:`UNIT_SCALE_TOLERANCE` of 1, zero or not finite."""
    atoms = op.atoms
    scale = float(atoms.detach().square().sum().div(op.n_atoms).sqrt())
    if not (0 < scale < float("inf")) or abs(scale - 1) <= UNIT_SCALE_TOLERANCE:
        return 1.0
    return scale


def _rescaled_callback(callback: Callback, scale: float) -> Callback:
    """``callback`` seeing the caller's codes ``z / scale`` instead of the rescaled problem's."""
    def rescaled(iteration: int, state: IterationState) -> None:
        callback(iteration, replace(state, z=state.z / scale))
    return rescaled


def _admm(op: LinearOperator, Y: torch.Tensor, lam: float, reg: Regularizer, *, max_iter: int,
          tol: float, z0: torch.Tensor | None, rho: float | None, rho_per_lam: float,
          relax: float, adaptive: bool, check_every: int,
          callback: Callback | None) -> SolverResult:
    """:func:`admm_fourier` for kernels as given."""
    batch = Y.shape[0]
    emb = op.fourier_embedding(tuple(Y.shape[-2:]))
    grid, codes = emb.grid, emb.code_region
    code_shape = (batch, op.n_atoms, *grid)
    masked = not emb.circular
    rho0 = rho_per_lam * lam + 1 if rho is None else rho
    rho_t = torch.full((batch,), rho0, dtype=Y.dtype, device=Y.device)
    if rho is None:
        # the rule reads λ against images of unit range; ADMM at a fixed ρ is scale-equivariant,
        # so an image of a wider range (0–255 pixels) gets the ρ of its rescaled self
        # (B3's image ×255: 2320 iterations to 1e-4 with 10λ + 1, the unit image's 210)
        scale = Y.abs().flatten(1).amax(1)
        rho_t = torch.where(scale > 1, rho_per_lam * lam / scale + 1, rho_t)
    factor = _Factor(emb, rho_t.new_ones(1) if masked else rho_t)  # masked: σ = 1 for all

    y = torch.zeros(code_shape, dtype=Y.dtype, device=Y.device)
    u = torch.zeros_like(y)
    if z0 is not None:
        # a warm start is a fixed point when z0 is optimal: the multiplier ρu = Dᵀ(y − Dz0)
        y[(..., *codes)] = z0
        r0 = Y.new_zeros((batch, Y.shape[1], *grid))
        r0[(..., *emb.signal_region)] = Y - op.decode(z0)
        u = torch.fft.irfft2(emb.analysis(torch.fft.rfft2(r0)), s=grid) / _per_image(rho_t)
    if masked:
        s_grid = Y.new_zeros((batch, Y.shape[1], *grid))
        s_grid[(..., *emb.signal_region)] = Y
        state = _State(idx=torch.arange(batch, device=Y.device), Y=Y, s_grid=s_grid, b_f=None,
                       y=y, u=u, rhs=None, y0=_grid_decode(emb, y) - s_grid,
                       u0=torch.zeros_like(s_grid), rho=rho_t)
        if z0 is not None:
            state.u0 = -r0 / _per_image(rho_t)
        weight = torch.zeros((1, 1, *grid), dtype=Y.dtype, device=Y.device)
        weight[(..., *emb.signal_region)] = 1
        code_mask = torch.zeros((1, 1, *grid), dtype=Y.dtype, device=Y.device)
        code_mask[(..., *codes)] = 1
    else:
        state = _State(idx=torch.arange(batch, device=Y.device), Y=Y, s_grid=None,
                       b_f=emb.analysis(torch.fft.rfft2(Y)) / _per_image(rho_t), y=y, u=u,
                       rhs=None, y0=None, u0=None, rho=rho_t)
    fused = _fuses(Y, masked)
    if fused:
        from ._admm_kernel import pack_pairs, relaxed_prox_step, solve_and_pack

        use_torch_threads()
        one_channel = emb.spectrum.shape[1] == 1
        spectrum = emb.spectrum[:, 0].contiguous().numpy() if one_channel else None
        state.rhs = state.y - state.u

    # Dᵀr_x = ρ(x − y + u) holds as far as x solves its system; with several channels the
    # per-frequency Woodbury solve is too inexact for a certificate (float32 colour images at
    # λ = 1e-3 λ_max: the dual point came out infeasible and the gap 0 at a true error of
    # 1e-4), so there the correlations are computed
    exact_correlations = not masked and emb.spectrum.shape[1] > 1
    extrapolation = DualExtrapolation(Y, lam, reg, adjoint=op.adjoint,
                                      local=local_rescaling(op, lam, reg))
    out = BatchOutputs(y[(..., *codes)])
    finish = WorkingSetFinish.when_applicable(op, Y, lam, reg, tol)
    schedule = CheckSchedule(batch, tol, check_every, max_iter)

    for k in range(1, max_iter + 1):
        check = k % check_every == 0 or k == max_iter  # the residuals at x are recorded
        rebalance = adaptive and k % REBALANCE_EVERY == 0
        y_old = state.y  # replaced, not overwritten, where the step is not fused
        # ---- x update: one linear system per frequency (right-hand side over σ, in place)
        rhs_f = torch.fft.rfft2(state.rhs if fused else state.y - state.u)
        if fused:  # x as interleaved pairs of maps (see _admm_kernel)
            packed = torch.empty((rhs_f.shape[0], (op.n_atoms + 1) // 2, *grid),
                                 dtype=rhs_f.dtype)
            if one_channel:  # right-hand side, solve and packing in one pass
                image_f = (rhs_f.new_empty((rhs_f.shape[0], *rhs_f.shape[2:])) if check
                           else rhs_f.new_empty((0, 0, 0)))
                solve_and_pack(rhs_f.numpy(), state.b_f.numpy(), spectrum,
                               factor.inner[:, 0].numpy(), packed.numpy(), image_f.numpy())
                if check:
                    image_f = _per_image(state.rho) * image_f[:, None]
            else:
                x_f = factor.solve_(rhs_f.add_(state.b_f))
                pack_pairs(x_f.numpy(), packed.numpy())
                image_f = emb.synthesis(x_f) if check else None
            x_pairs = torch.view_as_real(torch.fft.ifft2(packed))
        else:
            if masked:
                rhs_f.add_(emb.analysis(torch.fft.rfft2(state.y0 + state.s_grid - state.u0)))
            else:
                rhs_f.add_(state.b_f)
            x_f = factor.solve_(rhs_f)
            x = torch.fft.irfft2(x_f, s=grid)
            image_f = emb.synthesis(x_f) if check or masked else None
        if masked:
            dx = torch.fft.irfft2(image_f, s=grid)
            r_x = state.Y - dx[(..., *emb.signal_region)]
            c_x = op.adjoint(r_x) if check else None
        else:
            r_x = state.Y - torch.fft.irfft2(image_f, s=grid) if check else None
            # Dᵀr_x = ρ(x − y + u); the fused step writes it
            c_x = _per_image(state.rho) * (x - state.y + state.u) if check and not fused else None
        # ---- relaxation, prox, multiplier update: v = αx + (1 − α)y + u
        if fused:
            sums = np.empty((x_pairs.shape[0], 5))
            c_x = torch.empty_like(state.y) if check else None
            correlations = _rows(c_x) if check else np.empty((0, 0), _rows(state.y).dtype)
            relaxed_prox_step(x_pairs.flatten(2, 3).numpy(),
                              *(_rows(t) for t in (state.y, state.u, state.rhs)),
                              (lam / state.rho).double().numpy(), float(relax),
                              bool(reg.nonneg), sums, rebalance, correlations,
                              state.rho.double().numpy())
            if rebalance:
                scale = _balance(torch.from_numpy(sums).to(state.rho.dtype))
        else:
            x_plain = x.clone() if rebalance else None
            v = x.mul_(relax).add_(state.y, alpha=1 - relax).add_(state.u)  # in place in x
            rho_b = _per_image(state.rho)
            y_new = reg.prox(v, lam / rho_b)
            if masked:
                y_new.mul_(code_mask)
                v0 = dx.mul_(relax).add_(state.y0 + state.s_grid, alpha=1 - relax)
                v0.sub_(state.s_grid).add_(state.u0)
                state.y0 = v0 * (1 - weight / (1 + rho_b))
                state.u0 = v0 - state.y0
            state.y, state.u = y_new, v.sub_(y_new)
            if rebalance:
                scale = _balance(_squared_norms(x_plain, y_old, state.y, state.u))
        # on the CPU a penalty that stays put (as on B3) skips the refactoring
        if rebalance and (not fused or bool((scale != 1).any())):
            state.rho = state.rho * scale
            scale_b = _per_image(scale)
            state.u = state.u / scale_b
            if masked:
                state.u0 = state.u0 / scale_b
            else:
                factor.set_sigma(state.rho)
                state.b_f = state.b_f / scale_b
            if fused:
                state.rhs = state.y - state.u
        due = schedule.due(k) if check else None
        if check:
            if exact_correlations:
                c_x = op.adjoint(r_x)
            extrapolation.record(r_x, c_x, state.idx)
        if due is None or not due.any():
            if callback is not None:
                callback(k, IterationState(k, batch, state.y[(..., *codes)], state.idx))
            continue
        # ---- certificate and stopping, for the images whose check is due
        every_image = bool(due.all())
        pick = slice(None) if every_image else torch.from_numpy(np.flatnonzero(due)).to(Y.device)
        rows = state.idx[pick]
        z = state.y[pick][(..., *codes)]
        r = state.Y[pick] - op.decode(z)
        energy = 0.5 * batch_dot(r, r) + lam * reg.value(z)
        dual = extrapolation.evaluate(rows).to(energy.dtype)
        gap = (energy - dual).clamp_min(0)
        candidates = None if finish is None else finish(rows, z, energy, gap)
        if candidates is not None:  # the state keeps its own codes; the output takes these
            into, z_new, energy_new, gap_new, _ = candidates
            z, energy, gap = z.clone(), energy.clone(), gap.clone()
            z[into], energy[into], gap[into] = z_new, energy_new.to(energy), gap_new.to(gap)
        finite = torch.isfinite(energy) & torch.isfinite(gap)
        done = (gap <= tol * energy) & finite
        flags = torch.stack([finite, done, gap / energy]).double().cpu().numpy()
        if not flags[0].all():
            raise FloatingPointError(
                f"ADMM diverged: the energy of {int((flags[0] == 0).sum())} sample(s) is not "
                f"finite at iteration {k}; the images or kernels hold values too large for "
                f"{str(Y.dtype).replace('torch.', '')}")
        schedule.advance(k, due, flags[2])
        if callback is not None:
            callback(k, _checked_state(k, batch, state, codes, pick, energy, gap))
        out.record(k, rows, z, done, energy, gap)
        leaving = np.zeros(due.shape, dtype=bool)
        leaving[due] = flags[1] > 0
        if leaving.all():
            break
        if leaving.any():
            stay = torch.from_numpy(~leaving).to(Y.device)
            state.keep(stay)
            schedule.keep(~leaving)
            if not masked:
                factor.keep(stay)
    return out.result("admm")


def _checked_state(k: int, batch: int, state: _State, codes, pick, energy: torch.Tensor,
                   gap: torch.Tensor) -> IterationState:
    """The callback's view at a check: every working image, with the energy and gap of those
    checked (``pick``) and NaN for the others."""
    if isinstance(pick, slice):
        return IterationState(k, batch, state.y[(..., *codes)], state.idx, energy, gap)
    energy_all = energy.new_full(state.idx.shape, float("nan")).index_copy_(0, pick, energy)
    gap_all = gap.new_full(state.idx.shape, float("nan")).index_copy_(0, pick, gap)
    return IterationState(k, batch, state.y[(..., *codes)], state.idx, energy_all, gap_all)


def _grid_decode(emb, y: torch.Tensor) -> torch.Tensor:
    """``D y`` on the grid: codes ``(B, n_atoms, gh, gw)`` to ``(B, channels, gh, gw)``."""
    return torch.fft.irfft2(emb.synthesis(torch.fft.rfft2(y)), s=emb.grid)


def _fuses(Y: torch.Tensor, masked: bool) -> bool:
    """Whether the fused step of :mod:`._admm_kernel` runs: CPU tensors, circular boundaries,
    a process that may start numba's threads (elsewhere the same step is five torch
    operations)."""
    return not masked and Y.device.type == "cpu" and parallel_loops_unusable() is None


def _rows(t: torch.Tensor):
    """A contiguous ``(B, ...)`` CPU tensor as a writable ``(B, n)`` NumPy view."""
    return t.view(t.shape[0], -1).numpy()


def _per_image(values: torch.Tensor) -> torch.Tensor:
    """``(B,)`` to ``(B, 1, 1, 1)``, to scale maps ``(B, n, h, w)`` image by image."""
    return values[:, None, None, None]


def _squared_norms(x, y_old, y, u) -> torch.Tensor:
    """``‖x − y‖², ‖x‖², ‖y‖², ‖y − y_old‖², ‖u‖²`` of each image, ``(B, 5)`` (what the fused
    CPU step sums in its own pass)."""
    return torch.stack([t.flatten(1).square().sum(1) for t in (x - y, x, y, y - y_old, u)], 1)


def _balance(sums: torch.Tensor) -> torch.Tensor:
    """The factor ``(B,)`` each image's ρ changes by (residual balancing, normalised residuals
    as in SPORCO): primal ``‖x − y‖ / max(‖x‖, ‖y‖)``, dual ``ρ‖y − y_old‖ / ‖ρu‖``, from the
    squared norms ``(B, 5)`` of :func:`_squared_norms`."""
    tiny = torch.finfo(sums.dtype).tiny
    norms = sums.clamp_min(0).sqrt()
    primal = norms[:, 0] / torch.maximum(norms[:, 1], norms[:, 2]).clamp_min(tiny)
    dual = norms[:, 3] / norms[:, 4].clamp_min(tiny)
    ratio = primal / dual.clamp_min(tiny)
    scale = ratio.sqrt().clamp(1 / MAX_SCALING, MAX_SCALING)
    unbalanced = (ratio > RESIDUAL_RATIO) | (ratio < 1 / RESIDUAL_RATIO)
    return torch.where(unbalanced & torch.isfinite(scale), scale, torch.ones_like(scale))


def _run(problem: Problem, reg: Regularizer, z0: torch.Tensor | None, *, tol: float,
         max_iter: int, callback: Callback | None, rho: float | None = None,
         rho_per_lam: float | None = None, relax: float = 1.8, adaptive: bool = True,
         check_every: int = 10) -> SolverResult:
    if problem.lam == 0:  # its penalty balancing then drives ρ away and the iterates diverge
        raise ValueError("method 'admm' needs lam > 0 (use 'fista' for least squares)")
    if rho is not None:
        rho = check_scalar(rho, "rho", low=0.0, low_inclusive=False)
        if rho_per_lam is not None:
            raise ValueError("give rho (the initial penalty) or rho_per_lam (the slope of its "
                             "default rule), not both")
    rho_per_lam = (DEFAULT_RHO_PER_LAM if rho_per_lam is None
                   else check_scalar(rho_per_lam, "rho_per_lam", low=0.0))
    relax = check_scalar(relax, "relax", low=0.0, high=2.0, low_inclusive=False)
    if relax == 2.0:
        raise ValueError("relax must be below 2 (over-relaxation α in (0, 2)), got 2.0")
    check_every = check_int(check_every, "check_every", low=1)
    return admm_fourier(problem.op, problem.Y, problem.lam, reg, max_iter=max_iter, tol=tol,
                        z0=z0, rho=rho, rho_per_lam=rho_per_lam, relax=relax,
                        adaptive=check_bool(adaptive, "adaptive"),
                        check_every=check_every, callback=callback)


def _unsupported(op: LinearOperator, reg: Regularizer) -> str | None:
    if not callable(getattr(op, "fourier_embedding", None)):
        return ("ADMM in the Fourier domain needs an operator that is a convolution "
                "(one that reports fourier_embedding()); use method='fista'")
    if not reg.is_l1:
        return "its sparse step is the L1 (or non-negative L1) prox; use method='fista'"
    return None


def _preferred(problem: Problem, reg: Regularizer) -> bool:
    """Circular boundaries, or off the CPU. B3 (circular, CPU): 0.31× FISTA's time at the oracle
    stop, 0.39× when both certify themselves with the working-set finish. With the ``"full"``
    boundary on the CPU masked ADMM certifies single large images first (B3's image at 1e-4:
    2.8 s against 4.2 s, ``benchmarks/results/conv_full_boundary.md``; a trained colour
    auto-encoder's held-out photograph at 1e-3: 4.7 s against 5.9 s), but on 100 colour tiles
    of 32×32 FISTA certified all in 7.7 s where ADMM left one uncertified after 1000 iterations
    (11.9 s; ``benchmarks/results/conv_ae_inference.md``), so FISTA stays; on a GPU FISTA runs a
    fixed step and ADMM needs fewer iterations."""
    if problem.lam <= 0:
        return False
    embedding = problem.op.fourier_embedding(tuple(problem.Y.shape[-2:]))
    return embedding.circular or problem.Y.device.type != "cpu"


register_method(Method("admm", _run, unsupported=_unsupported, preferred=_preferred,
                       priority=10, options=frozenset({"rho", "rho_per_lam", "relax",
                                                       "adaptive", "check_every"})))


__all__ = ["admm_fourier"]
