"""The compiled loop of method ``"gram_cd"`` (numba; imported only when that method runs).

One sample per parallel iteration, everything in float64. For ``min_z ½zᵀGz − bᵀz + λ‖z‖₁``
(``G = WᵀW``, ``b = Wᵀy``) each sample keeps its gradient ``q = b − Gz`` and repeats:

1. the working set: while the codes are all zero, the graded first sweep of
   :func:`_first_sweep` (an atom that changes updates all of ``q``) and the atoms non-zero
   after it; once some
   code is non-zero, no full sweep: the non-zero atoms and those whose ``|q_j|`` exceeds ``λ``
   (on B1's random dictionary, ~124 non-zeros, this took the run to a relative error of 1e-4
   from 283 to 193 ms: the full sweep of the later rounds moved every active atom against all
   of ``q``);
2. sweeps over the working set (the active set), on a copy of its Gram
   block, so a sweep costs ``O(m²)`` for ``m`` active atoms instead of ``O(m·n_atoms)``, until
   the largest change is small (or :data:`ACTIVE_SWEEPS` of them); after 2, 6, 14, ... of
   them, for at most :data:`NEWTON_MAX` active atoms, a Newton step solves
   ``G_AA x = b_A − λ·sign(z_A)`` (``b_A = q_A + G_AA z_A``) by Cholesky: where ``x`` keeps
   every sign it is the exact minimiser on that sign
   pattern and ends the inner loop; where some sign flips, the codes move to the first sign
   change along the segment (the energy decreases on it) and that code becomes zero;
3. ``q`` recomputed from the codes, then the energy and its certificate, the duality gap (the
   dual point is the residual scaled optimally within the dual constraint) or, where ``G`` is
   positive definite, the strong-convexity bound if smaller (:func:`_energy_and_gap`); stop
   when ``certificate ≤ tol·energy``, else the inner tolerance shrinks tenfold and the loop
   repeats.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FAST = {"contract", "reassoc", "nsz", "arcp"}
"""LLVM may fuse multiply-adds and reorder sums (so loops vectorise); NaN and infinity keep
their meaning."""
ACTIVE_SWEEPS = 1000
"""Most active-set sweeps in one outer round (each costs ``O(m²)``)."""
NEWTON_MAX = 64
"""Larger active sets skip the Newton step (its Cholesky costs ``O(m³)``; on such dense codes
coordinate descent alone converges in a few sweeps)."""
CHUNKS = 64
"""Parts the batch is cut into for the threads (each allocates its workspace once)."""
GRADE_RATIO = 0.7
"""The first sweep's thresholds fall by this factor from one pass to the next
(:func:`_first_sweep`)."""
INNER_TOL = 3e-2
"""First inner stopping rule: the largest scaled change of a sweep below this fraction of the
largest code; divided by ten after each outer round. (1e-2 before 2026-12-07: finer sweeps
in the first round refine codes on a working set that the next round replaces; on B1's learned
dictionary at ~40 non-zeros, 3e-2 took the solve to 1e-6 about 7 % sooner.)"""


@njit(cache=True, inline="always", fastmath=FAST)
def shrink(g: float, lam: float, nonneg: bool) -> float:  # pragma: no cover - compiled
    """The scalar soft threshold at ``lam`` (one-sided with ``nonneg``); also ADMM's prox."""
    if g > lam:
        return g - lam
    if g < -lam and not nonneg:
        return g + lam
    return 0.0


@njit(cache=True, inline="always", fastmath=FAST)
def _minimiser(g: float, gjj: float, inv: float) -> float:  # pragma: no cover - compiled
    """``g / gjj`` through the precomputed ``inv = 1/gjj``, except where that overflowed (an
    atom of norm below ~1e-154, whose ``gjj`` is subnormal: ``0 · inf`` would be NaN)."""
    return g * inv if inv < np.inf else g / gjj


@njit(cache=True, fastmath=FAST)
def _sweep(Ga, qa, za, m, lam, nonneg, inv_diag, root_diag):  # pragma: no cover - compiled
    """One cyclic sweep over the first ``m`` coordinates of ``za`` with Gram matrix ``Ga`` and
    gradient ``qa`` (both updated); returns the largest change scaled by ``sqrt(Ga_jj)``.
    ``inv_diag`` and ``root_diag`` hold ``1/Ga_jj`` and ``sqrt(Ga_jj)`` (0 for an all-zero
    atom, whose code stays zero): a division and a root out of the chain of dependent updates
    (about 10 % of the time on B1's learned dictionary). The full sweep is this on ``G``."""
    largest = 0.0
    for j in range(m):
        inv = inv_diag[j]
        if inv == 0.0:
            continue
        zj = za[j]
        gjj = Ga[j, j]
        step = _minimiser(shrink(qa[j] + gjj * zj, lam, nonneg), gjj, inv) - zj
        if step != 0.0:
            za[j] = zj + step
            for k in range(m):
                qa[k] -= step * Ga[j, k]
            largest = max(largest, abs(step) * root_diag[j])
    return largest


@njit(cache=True, fastmath=FAST)
def _first_sweep(G, q, z, lam, nonneg, inv_diag, root_diag):  # pragma: no cover - compiled
    """The first sweep from all-zero codes ``z`` (``q = b``; both updated): passes over the
    atoms whose correlation (``|q_j|``, or ``q_j`` for non-negative codes) exceeds a threshold
    that starts at :data:`GRADE_RATIO` times the largest and falls by that factor down to
    ``λ``, each minimising over those coordinates, then one full :func:`_sweep`. Strong
    correlations go first, as on a path of decreasing ``λ``, so fewer atoms become non-zero
    only for later sweeps to remove them: on B1's learned dictionary at ~40 non-zeros, 51
    atoms instead of 122 after the first sweep, and the solve to 1e-6 took a third less time
    (at ~10 non-zeros a tenth less; on the random dictionary, whose atoms hardly overlap, it
    changes little)."""
    n_atoms = q.shape[0]
    top = 0.0
    for j in range(n_atoms):
        top = max(top, q[j] if nonneg else abs(q[j]))
    threshold = GRADE_RATIO * top
    while threshold > lam:
        for j in range(n_atoms):
            inv = inv_diag[j]
            if inv != 0.0 and (q[j] if nonneg else abs(q[j])) > threshold:
                gjj = G[j, j]
                step = _minimiser(shrink(q[j] + gjj * z[j], lam, nonneg), gjj, inv) - z[j]
                if step != 0.0:
                    z[j] += step
                    row = G[j]
                    for k in range(n_atoms):
                        q[k] -= step * row[k]
        threshold *= GRADE_RATIO
    _sweep(G, q, z, n_atoms, lam, nonneg, inv_diag, root_diag)


@njit(cache=True, fastmath=FAST)
def _newton(Ga, qa, za, m, lam, chol, x, dropped):  # pragma: no cover - compiled
    """Exact codes on the active signs; ``True`` when every sign holds (see the module doc).

    An atom whose Gram column depends on the earlier ones (a Cholesky pivot below ``1e-12``
    of its diagonal: more active atoms than dimensions, or repeated atoms) is dropped from the
    system: its code goes to zero and the others solve the reduced one. The step is then taken
    only if it lowers the energy, since the dropped codes' share may cost more on the rest."""
    for j in range(m):
        if za[j] == 0.0:
            return False
    for j in range(m):
        acc = qa[j]
        for k in range(m):
            acc += Ga[j, k] * za[k]
        x[j] = acc - (lam if za[j] > 0 else -lam)
    n_dropped = 0
    for j in range(m):
        d = Ga[j, j]
        for k in range(j):
            d -= chol[j, k] * chol[j, k]
        dropped[j] = d <= 1e-12 * Ga[j, j]
        if dropped[j]:  # a zero column below the diagonal: the later rows ignore this atom
            n_dropped += 1
            chol[j, j] = 1.0
            for i in range(j + 1, m):
                chol[i, j] = 0.0
            continue
        d = np.sqrt(d)
        chol[j, j] = d
        for i in range(j + 1, m):
            v = Ga[i, j]
            for k in range(j):
                v -= chol[i, k] * chol[j, k]
            chol[i, j] = v / d
    if n_dropped == m:
        return False
    for j in range(m):
        if dropped[j]:
            x[j] = 0.0
            continue
        v = x[j]
        for k in range(j):
            v -= chol[j, k] * x[k]
        x[j] = v / chol[j, j]
    for j in range(m - 1, -1, -1):
        if dropped[j]:
            continue
        v = x[j]
        for k in range(j + 1, m):
            v -= chol[k, j] * x[k]
        x[j] = v / chol[j, j]
    t = 1.0
    for j in range(m):
        if (x[j] > 0) != (za[j] > 0) or x[j] == 0.0:
            t = min(t, za[j] / (za[j] - x[j]))
    if n_dropped:
        # f(z + s) − f(z) = −sᵀq + ½sᵀGs + λ(‖z + s‖₁ − ‖z‖₁), s = t(x − z)
        change = 0.0
        for j in range(m):
            s_j = t * (x[j] - za[j])
            g_s = 0.0
            for k in range(m):
                g_s += Ga[j, k] * t * (x[k] - za[k])
            change += s_j * (0.5 * g_s - qa[j]) + lam * (abs(za[j] + s_j) - abs(za[j]))
        if not change < 0.0:
            return False
    for j in range(m):
        new = za[j] + t * (x[j] - za[j])
        if t < 1.0 and ((new > 0) != (za[j] > 0) or abs(new) <= 1e-12 * abs(za[j])):
            new = 0.0
        step = new - za[j]
        if step != 0.0:
            for k in range(m):
                qa[k] -= step * Ga[j, k]
        za[j] = new
    return t >= 1.0


@njit(cache=True, fastmath=FAST)
def _energy_and_gap(b, q, z, yy, lam, nonneg, mu):  # pragma: no cover - compiled
    """The energy, a dual value and a strong-convexity bound, ``(energy, dual, bound)``:

    - the dual value: ``‖r‖² = ‖y‖² − bᵀz − zᵀq`` and ``yᵀr = ‖y‖² − bᵀz``, the dual point
      ``s·r`` with the best ``s`` such that ``‖s·Wᵀr‖∞ ≤ λ`` (one-sided for non-negative
      codes);
    - with ``mu > 0``, a lower bound on the smallest eigenvalue of ``G`` (the energy is then
      ``mu``-strongly convex), ``‖g‖² / (2·mu)`` for the subgradient ``g`` of least norm
      (``λ·sign(z_j) − q_j`` on the support, ``max(|q_j| − λ, 0)`` off it, ``max(q_j − λ,
      0)`` for non-negative codes); ``inf`` without ``mu``.

    Both ``energy − dual`` and ``bound`` are upper bounds on ``E(z) − min E``
    (:func:`_certificate` takes the smaller). Near the optimum the first falls like the
    distance to it and the second like its square: on B1's random dictionary (``mu`` = 0.19)
    the bound stayed within 3–5× of the true error where the gap was 10³–10⁴× above it."""
    bz = 0.0
    zq = 0.0
    l1 = 0.0
    q_max = 0.0
    g_sq = 0.0
    for k in range(q.shape[0]):
        bz += b[k] * z[k]
        zq += z[k] * q[k]
        l1 += abs(z[k])
        correlation = q[k] if nonneg else abs(q[k])
        q_max = max(q_max, correlation)
        if z[k] > 0.0:
            g = lam - q[k]
        elif z[k] < 0.0:
            g = lam + q[k]
        else:
            g = max(correlation - lam, 0.0)
        g_sq += g * g
    rr = max(yy - bz - zq, 0.0)
    yr = yy - bz
    energy = 0.5 * rr + lam * l1
    s = yr / rr if rr > 0 else 1.0
    if q_max * s > lam:
        s = lam / q_max
    s = max(s, 0.0)
    bound = g_sq / (2.0 * mu) if mu > 0.0 else np.inf
    return energy, s * yr - 0.5 * s * s * rr, bound


@njit(cache=True, inline="always", fastmath=FAST)
def _certificate(energy, dual, bound):  # pragma: no cover - compiled
    """The smaller of the duality gap ``energy − dual`` and the strong-convexity bound."""
    return min(max(energy - dual, 0.0), bound)


@njit(cache=True, fastmath=FAST)
def _solve_one(G, inv_diag, root_diag, b, z, yy, lam, mu, tol, max_rounds, nonneg, inner_tol,
               rounds, q, active, qa, za, x, ga_buf, chol_buf, dropped, inv_a, root_a,
               ):  # pragma: no cover - compiled
    """One sample, in place in ``z``; returns ``(energy, gap, dual, inner_tol, rounds)`` (see
    :func:`_energy_and_gap`).
    ``inv_diag`` and ``root_diag`` are ``G``'s as :func:`_sweep` takes them; the other arrays
    are the caller's workspace (``n_atoms`` and ``n_atoms²`` long)."""
    n_atoms = b.shape[0]
    q[:] = b
    for j in range(n_atoms):
        if z[j] != 0.0:
            row = G[j]
            for k in range(n_atoms):
                q[k] -= z[j] * row[k]
    energy, dual, bound = _energy_and_gap(b, q, z, yy, lam, nonneg, mu)
    gap = _certificate(energy, dual, bound)
    while rounds < max_rounds and gap > tol * energy:
        rounds += 1
        if not z.any():
            _first_sweep(G, q, z, lam, nonneg, inv_diag, root_diag)
        m = 0
        z_max = 0.0
        for j in range(n_atoms):
            if z[j] != 0.0 or q[j] > lam or (q[j] < -lam and not nonneg):
                active[m] = j
                m += 1
                z_max = max(z_max, abs(z[j]))
        Ga = ga_buf[:m * m].reshape((m, m))
        chol = chol_buf[:m * m].reshape((m, m))
        for a in range(m):
            qa[a] = q[active[a]]
            za[a] = z[active[a]]
            inv_a[a] = inv_diag[active[a]]
            root_a[a] = root_diag[active[a]]
            row = G[active[a]]
            for c in range(m):
                Ga[a, c] = row[active[c]]
        next_newton = 2
        for inner in range(1, ACTIVE_SWEEPS + 1):
            change = _sweep(Ga, qa, za, m, lam, nonneg, inv_a, root_a)
            if inner == next_newton and m <= NEWTON_MAX:
                next_newton = 2 * next_newton + 2
                if _newton(Ga, qa, za, m, lam, chol, x, dropped):
                    break
            if change <= inner_tol * z_max:
                break
        for a in range(m):
            z[active[a]] = za[a]
        q[:] = b
        for a in range(m):
            if za[a] != 0.0:
                row = G[active[a]]
                for k in range(n_atoms):
                    q[k] -= za[a] * row[k]
        energy, dual, bound = _energy_and_gap(b, q, z, yy, lam, nonneg, mu)
        gap = _certificate(energy, dual, bound)
        inner_tol *= 0.1
    return energy, gap, dual, inner_tol, rounds


@njit(cache=True, fastmath=FAST)
def _round_to_single(G, b, z, q, yy, lam, nonneg, mu, dual):  # pragma: no cover - compiled
    """Round the codes ``z`` to float32 values in place (``q`` follows) and return the energy
    of the rounded codes and their certificate: their gap to ``dual``, the dual value that
    certified the unrounded codes, or their own strong-convexity bound where smaller.
    Measuring the rounded codes against their own residual instead would lose the rounding's
    first-order effect on ``‖Wᵀr‖∞`` (about 1e-5 of the energy): the dual point that
    certified the float64 codes certifies the rounded ones to within their energy change,
    which is second order."""
    for j in range(z.shape[0]):
        if z[j] != 0.0:
            step = np.float64(np.float32(z[j])) - z[j]
            if step != 0.0:
                z[j] += step
                row = G[j]
                for k in range(q.shape[0]):
                    q[k] -= step * row[k]
    rounded, _, bound = _energy_and_gap(b, q, z, yy, lam, nonneg, mu)
    return rounded, _certificate(rounded, dual, bound)


@njit(parallel=True, cache=True, fastmath=FAST)
def sparse_signal_correlations(Y, W, B, yy):  # pragma: no cover - compiled
    """``B = Y W`` and ``yy = ‖y‖²`` per row, adding only the rows of ``W`` that a signal's
    non-zero entries select: ``Y`` (n, n_features), ``W`` (n_features, n_atoms), ``B``
    (n, n_atoms) and ``yy`` (n,), float64, the last two overwritten. For mostly-zero signals
    (MNIST digits: 81 % of the pixels are 0) this does a fifth of a dense product's work; on
    B1's 10 000 digits and 256 atoms it took 28–33 ms where the BLAS product took 46–50 ms
    (:data:`~.gram_cd.SPARSE_SIGNAL_DENSITY`)."""
    n, n_features = Y.shape
    n_atoms = W.shape[1]
    n_chunks = min(n, CHUNKS)
    for c in prange(n_chunks):
        row = np.empty(n_atoms)
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            row[:] = 0.0
            squares = 0.0
            for k in range(n_features):
                v = Y[i, k]
                if v != 0.0:
                    squares += v * v
                    atoms_k = W[k]
                    for a in range(n_atoms):
                        row[a] += v * atoms_k[a]
            B[i] = row
            yy[i] = squares


@njit(parallel=True, cache=True, fastmath=FAST)
def lasso_gram_cd(G, B, Z, yy, lam, mu, tol, max_rounds, nonneg, inner_tols, rounds,
                  energy_out, gap_out, single):  # pragma: no cover - compiled
    """Solve every row of ``Z`` (warm start, overwritten) in parallel, until its relative
    certificate is at most ``tol`` or it has run ``max_rounds`` outer rounds in all.

    ``G`` (n_atoms, n_atoms), ``B`` (n, n_atoms), ``Z`` (n, n_atoms) and ``yy`` (n,) are
    float64; ``mu`` is a lower bound on ``G``'s smallest eigenvalue, or 0 (no
    strong-convexity bound, :func:`_energy_and_gap`). ``inner_tols`` (n,) float64 and
    ``rounds`` (n,) int64 carry each sample's inner tolerance and its rounds so far from one
    call to the next, so that a run split into several calls does exactly what one call does;
    ``energy_out`` and ``gap_out`` (n,) float64 receive each sample's energy and certificate.
    With ``single``, the codes are finally rounded to float32 values and the energies and
    certificates are those of the rounded codes (:func:`_round_to_single`). The batch is cut
    into :data:`CHUNKS` parts, each with its own workspace, shared by the samples it solves
    one after the other.
    """
    n, n_atoms = B.shape
    inv_diag = np.zeros(n_atoms)
    root_diag = np.zeros(n_atoms)
    for j in range(n_atoms):
        if G[j, j] > 0.0:
            inv_diag[j] = 1.0 / G[j, j]
            root_diag[j] = np.sqrt(G[j, j])
    n_chunks = min(n, CHUNKS)
    for c in prange(n_chunks):
        q = np.empty(n_atoms)
        active = np.empty(n_atoms, dtype=np.int64)
        qa = np.empty(n_atoms)
        za = np.empty(n_atoms)
        x = np.empty(n_atoms)
        ga_buf = np.empty(n_atoms * n_atoms)
        chol_buf = np.empty(n_atoms * n_atoms)
        dropped = np.empty(n_atoms, dtype=np.bool_)
        inv_a = np.empty(n_atoms)
        root_a = np.empty(n_atoms)
        for i in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            z = Z[i].copy()
            energy, gap, dual, inner_tol, done = _solve_one(
                G, inv_diag, root_diag, B[i], z, yy[i], lam, mu, tol, max_rounds, nonneg,
                inner_tols[i], rounds[i], q, active, qa, za, x, ga_buf, chol_buf, dropped,
                inv_a, root_a)
            if single:
                energy, gap = _round_to_single(G, B[i], z, q, yy[i], lam, nonneg, mu, dual)
            Z[i] = z
            inner_tols[i], rounds[i] = inner_tol, done
            energy_out[i], gap_out[i] = energy, gap
