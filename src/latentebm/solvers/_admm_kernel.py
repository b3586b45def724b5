"""The CPU kernels of Fourier-domain ADMM (numba; imported only when that method runs on CPU
tensors with circular boundaries).

**Inverse transform.** PyTorch's CPU ``irfft2`` copies its input and cost about 2.7× its
``rfft2`` on B3 (32 maps of 256×256: 6.9 against 2.5 ms). :func:`pack_pairs` instead writes the
full spectrum of ``x_{2k} + i·x_{2k+1}`` from the half spectra of two real maps (0.3 ms), and
one complex ``ifft2`` of half as many maps (3.1 ms) gives both: ``x_{2k}`` in its real part,
``x_{2k+1}`` in its imaginary part.

**Elementwise step.** After the ``x`` update ADMM makes five passes over code-sized arrays:
the relaxation ``v = αx + (1 − α)y + u``, the soft threshold ``y = prox_{λ/ρ}(v)``, the
multiplier update ``u = v − y``, and the next right-hand side ``y − u``, each allocating its
result. :func:`relaxed_prox_step` does them in one parallel pass, in place, reading ``x`` in
the interleaved layout the complex transform leaves. Every
:data:`~.admm_fourier.REBALANCE_EVERY` iterations the same pass also sums the five squared
norms residual balancing compares, which otherwise took two copies and five more passes.

The first call on a machine compiles them (a few seconds, then cached on disk; loading the
cache takes about 0.3 s per process).
"""

from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, cache=True)
def pack_pairs(half, full):  # pragma: no cover - compiled
    """Write the full spectra of ``x_{2k} + i·x_{2k+1}`` from the half spectra of real maps.

    Parameters
    ----------
    half : numpy.ndarray of shape (batch, n_maps, h, w // 2 + 1), complex
        ``rfft2`` of real maps ``x_m`` on an ``h × w`` grid.
    full : numpy.ndarray of shape (batch, ceil(n_maps / 2), h, w), complex
        Overwritten; an odd last map is paired with zeros.
    """
    batch, n_maps, h, w_half = half.shape
    pairs, w = full.shape[1], full.shape[3]
    for b in range(batch):
        for row in prange(pairs * h):
            k, ky = row // h, row % h
            even, odd = 2 * k, 2 * k + 1
            ky_mirror = (h - ky) % h
            for kx in range(w_half):
                a = half[b, even, ky, kx]
                c = half[b, odd, ky, kx] if odd < n_maps else 0j
                full[b, k, ky, kx] = complex(a.real - c.imag, a.imag + c.real)
            # X[ky, kx] = conj(X[−ky, −kx]) for the columns the half spectrum omits
            for kx in range(w_half, w):
                a = half[b, even, ky_mirror, w - kx]
                c = half[b, odd, ky_mirror, w - kx] if odd < n_maps else 0j
                full[b, k, ky, kx] = complex(a.real + c.imag, c.real - a.imag)


@njit(inline="always")
def _shrink(v, t, nonneg):  # pragma: no cover - compiled
    if v > t:
        return v - t
    if v < -t and not nonneg:
        return v + t
    return 0.0


@njit(parallel=True, cache=True)
def relaxed_prox_step(x_pairs, y, u, rhs, thresholds, relax, nonneg, sums, with_sums,
                      correlations, rho):  # pragma: no cover - compiled
    """Overwrite ``y`` with ``prox(v)``, ``u`` with ``v − prox(v)`` and ``rhs`` with their
    difference, where ``v = relax·x + (1 − relax)·y + u``.

    Parameters
    ----------
    x_pairs : numpy.ndarray of shape (batch, ceil(n_maps / 2), n, 2)
        The plain ``x`` update, maps ``2k`` and ``2k + 1`` interleaved (the real view of the
        complex inverse transform of :func:`pack_pairs`'s output), ``n = h·w``.
    y, u, rhs : numpy.ndarray of shape (batch, n_maps·n)
        The sparse iterate, the scaled multiplier and the buffer of the next right-hand side
        ``y − u``, of ``x_pairs``'s dtype, each image's values in a row.
    thresholds : numpy.ndarray of shape (batch,)
        ``λ/ρ`` of each image.
    relax : float
        Over-relaxation ``α``.
    nonneg : bool
        One-sided threshold ``max(v − λ/ρ, 0)``.
    sums : numpy.ndarray of shape (batch, 5), float64
        With ``with_sums``, overwritten per image with ``‖x − y‖²``, ``‖x‖²``, ``‖y‖²``,
        ``‖y − y_old‖²`` and ``‖u‖²`` (``y`` and ``u`` the new iterates).
    with_sums : bool
        Whether to sum them (residual balancing).
    correlations : numpy.ndarray of shape (batch, n_maps·n) or (0, 0)
        Where not empty, overwritten with ``ρ(x − y_old + u_old)``, which is ``Dᵀ(s − Dx)``
        (the correlations of the residual of ``x``, for the certificate).
    rho : numpy.ndarray of shape (batch,)
        ``ρ`` of each image (read with ``correlations`` only).
    """
    batch, n = x_pairs.shape[0], x_pairs.shape[2]
    n_maps = y.shape[1] // n
    keep = 1.0 - relax
    with_correlations = correlations.shape[0] > 0
    for b in range(batch):
        t, penalty = thresholds[b], rho[b]
        primal = 0.0
        xx = 0.0
        yy = 0.0
        dual = 0.0
        uu = 0.0
        for m in prange(n_maps):
            pair, part, start = m >> 1, m & 1, m * n
            for p in range(n):
                i = start + p
                plain = x_pairs[b, pair, p, part]
                old = y[b, i]
                if with_correlations:
                    correlations[b, i] = penalty * (plain - old + u[b, i])
                v = relax * plain + keep * old + u[b, i]
                sparse = _shrink(v, t, nonneg)
                multiplier = v - sparse
                y[b, i] = sparse
                u[b, i] = multiplier
                rhs[b, i] = sparse - multiplier
                if with_sums:
                    primal += (plain - sparse) * (plain - sparse)
                    xx += plain * plain
                    yy += sparse * sparse
                    dual += (sparse - old) * (sparse - old)
                    uu += multiplier * multiplier
        if with_sums:
            sums[b, 0] = primal
            sums[b, 1] = xx
            sums[b, 2] = yy
            sums[b, 3] = dual
            sums[b, 4] = uu
