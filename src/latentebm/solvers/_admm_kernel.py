"""The fused elementwise step of Fourier-domain ADMM on the CPU (numba; imported only when that
method runs on CPU tensors with circular boundaries).

After its ``x`` update, ADMM makes five passes over code-sized arrays: the relaxation
``v = αx + (1 − α)y + u``, the soft threshold ``y = prox_{λ/ρ}(v)``, the multiplier update
``u = v − y``, and the next right-hand side ``y − u``, each one allocating its result. Here
they are one parallel pass, in place. Every :data:`~.admm_fourier.REBALANCE_EVERY` iterations
the same pass also sums the five squared norms residual balancing compares, which otherwise
took two copies and five more passes. The first call on a machine compiles them (about 0.6 s
each, then cached on disk; loading the cache takes about 0.3 s per process).
"""

from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, cache=True)
def relaxed_prox_step(x, y, u, rhs, thresholds, relax, nonneg):  # pragma: no cover - compiled
    """Overwrite ``y`` with ``prox(v)``, ``u`` with ``v − prox(v)`` and ``rhs`` with their
    difference, where ``v = relax·x + (1 − relax)·y + u``.

    Parameters
    ----------
    x, y, u, rhs : numpy.ndarray of shape (batch, n)
        The plain ``x`` update, the sparse iterate, the scaled multiplier and the buffer of the
        next right-hand side ``y − u``, all of one float dtype, each image's values in a row.
    thresholds : numpy.ndarray of shape (batch,)
        ``λ/ρ`` of each image.
    relax : float
        Over-relaxation ``α``.
    nonneg : bool
        One-sided threshold ``max(v − λ/ρ, 0)``.
    """
    batch, n = x.shape
    keep = 1.0 - relax
    for b in range(batch):
        t = thresholds[b]
        for i in prange(n):
            v = relax * x[b, i] + keep * y[b, i] + u[b, i]
            if v > t:
                sparse = v - t
            elif v < -t and not nonneg:
                sparse = v + t
            else:
                sparse = 0.0
            multiplier = v - sparse
            y[b, i] = sparse
            u[b, i] = multiplier
            rhs[b, i] = sparse - multiplier


@njit(parallel=True, cache=True)
def relaxed_prox_step_with_norms(x, y, u, rhs, thresholds, relax, nonneg,
                                 sums):  # pragma: no cover - compiled
    """:func:`relaxed_prox_step`, also writing the squared norms residual balancing needs.

    Parameters
    ----------
    x, y, u, rhs, thresholds, relax, nonneg
        As in :func:`relaxed_prox_step`.
    sums : numpy.ndarray of shape (batch, 5)
        Overwritten, per image, with ``‖x − y‖²``, ``‖x‖²``, ``‖y‖²``, ``‖y − y_old‖²`` and
        ``‖u‖²`` (``x`` the plain update, ``y`` and ``u`` the new iterates).
    """
    batch, n = x.shape
    keep = 1.0 - relax
    for b in range(batch):
        t = thresholds[b]
        primal = 0.0
        xx = 0.0
        yy = 0.0
        dual = 0.0
        uu = 0.0
        for i in prange(n):
            plain = x[b, i]
            old = y[b, i]
            v = relax * plain + keep * old + u[b, i]
            if v > t:
                sparse = v - t
            elif v < -t and not nonneg:
                sparse = v + t
            else:
                sparse = 0.0
            multiplier = v - sparse
            y[b, i] = sparse
            u[b, i] = multiplier
            rhs[b, i] = sparse - multiplier
            primal += (plain - sparse) * (plain - sparse)
            xx += plain * plain
            yy += sparse * sparse
            dual += (sparse - old) * (sparse - old)
            uu += multiplier * multiplier
        sums[b, 0] = primal
        sums[b, 1] = xx
        sums[b, 2] = yy
        sums[b, 3] = dual
        sums[b, 4] = uu
