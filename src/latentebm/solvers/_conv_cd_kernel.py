"""Coordinate descent on a working set of convolutional code coefficients (numba, serial).

A coefficient ``(m, i, j)`` of an image's code maps touches the pixels ``(i + a + o_h, j + b +
o_w)`` (``a < kh``, ``b < kw``; wrapped for circular boundaries, clipped to the image for
``"full"`` ones, where ``o = −(k − 1)``) with the weights ``K[m, :, a, b]``. An update reads that
footprint of the residual, soft-thresholds, and writes the change back into it, so a sweep over
a working set of ``n`` coefficients costs ``O(n · channels · kh · kw)`` whatever the image size.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def working_set_cd(kernels, residual, atoms, rows, cols, values, squared_norms, lam,
                   nonneg, circular, max_sweeps, tol):  # pragma: no cover - compiled
    """Sweep the working set until no coefficient moves the residual by more than ``tol``.

    Parameters
    ----------
    kernels : ndarray, shape (n_atoms, channels, kh, kw)
    residual : ndarray, shape (channels, H, W)
        ``y − Dz`` of the image, updated in place.
    atoms, rows, cols : ndarray of int64, shape (n,)
        The working set's coefficients ``(m, i, j)`` (code-map coordinates).
    values : ndarray, shape (n,)
        Their current values, updated in place (``z`` outside the set is held fixed).
    squared_norms : ndarray, shape (n_atoms,)
        ``‖K_m‖²`` (atoms of norm 0 are skipped).
    lam : float
    nonneg : bool
    circular : bool
    max_sweeps : int
    tol : float
        Stop when a sweep's largest ``|Δz|·‖K_m‖`` is at most this.

    Returns
    -------
    int
        Sweeps run.
    """
    n_atoms, channels, kh, kw = kernels.shape
    height, width = residual.shape[1], residual.shape[2]
    shift_h = 0 if circular else kh - 1
    shift_w = 0 if circular else kw - 1
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        largest = 0.0
        for k in range(atoms.shape[0]):
            m = atoms[k]
            norm2 = squared_norms[m]
            if norm2 <= 0.0:
                continue
            top, left = rows[k] - shift_h, cols[k] - shift_w
            inside = top >= 0 and left >= 0 and top + kh <= height and left + kw <= width
            corr = 0.0
            if inside:
                for c in range(channels):
                    for a in range(kh):
                        for b in range(kw):
                            corr += kernels[m, c, a, b] * residual[c, top + a, left + b]
            else:
                corr = _edge_correlation(kernels, residual, m, top, left, circular)
            old = values[k]
            step = old + corr / norm2
            threshold = lam / norm2
            if step > threshold:
                new = step - threshold
            elif step < -threshold and not nonneg:
                new = step + threshold
            else:
                new = 0.0
            delta = new - old
            if delta == 0.0:
                continue
            values[k] = new
            moved = abs(delta) * np.sqrt(norm2)
            if moved > largest:
                largest = moved
            if inside:
                for c in range(channels):
                    for a in range(kh):
                        for b in range(kw):
                            residual[c, top + a, left + b] -= kernels[m, c, a, b] * delta
            else:
                _edge_update(kernels, residual, m, top, left, circular, delta)
        if largest <= tol:
            break
    return sweeps


@njit(cache=True)
def _edge_correlation(kernels, residual, m, top, left, circular):  # pragma: no cover
    """``⟨K_m, footprint⟩`` of a coefficient whose footprint wraps or leaves the image."""
    channels, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    height, width = residual.shape[1], residual.shape[2]
    corr = 0.0
    for c in range(channels):
        for a in range(kh):
            p = top + a
            if circular:
                p = p % height
            elif p < 0 or p >= height:
                continue
            for b in range(kw):
                q = left + b
                if circular:
                    q = q % width
                elif q < 0 or q >= width:
                    continue
                corr += kernels[m, c, a, b] * residual[c, p, q]
    return corr


@njit(cache=True)
def _edge_update(kernels, residual, m, top, left, circular, delta):  # pragma: no cover
    """``footprint −= δ·K_m`` for a coefficient whose footprint wraps or leaves the image."""
    channels, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    height, width = residual.shape[1], residual.shape[2]
    for c in range(channels):
        for a in range(kh):
            p = top + a
            if circular:
                p = p % height
            elif p < 0 or p >= height:
                continue
            for b in range(kw):
                q = left + b
                if circular:
                    q = q % width
                elif q < 0 or q >= width:
                    continue
                residual[c, p, q] -= kernels[m, c, a, b] * delta
