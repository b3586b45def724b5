"""Coordinate descent on a working set of convolutional code coefficients (numba, serial).

A coefficient ``(m, i, j)`` of an image's code maps touches the pixels ``(i + a + o_h, j + b +
o_w)`` (``a < kh``, ``b < kw``; wrapped for circular boundaries, clipped to the image for
``"full"`` ones, where ``o = −(k − 1)``) with the weights ``K[m, :, a, b]``. An update reads that
footprint of the residual, soft-thresholds, and writes the change back into it, so a sweep over
a working set of ``n`` coefficients costs ``O(n · channels · kh · kw)`` whatever the image size.
"""

from __future__ import annotations

from numba import njit

from ._gram_cd_kernel import shrink


@njit(cache=True)
def working_set_cd(kernels, residual, atoms, rows, cols, values, squared_norms, lam,
                   nonneg, circular, max_sweeps):  # pragma: no cover - compiled
    """Sweep the working set ``max_sweeps`` times, or until a sweep changes nothing.

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
        changed = False
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
                corr = _edge_window(kernels, residual, m, top, left, circular, 0.0)
            new = shrink(values[k] + corr / norm2, lam / norm2, nonneg)
            delta = new - values[k]
            if delta == 0.0:
                continue
            values[k] = new
            changed = True
            if inside:
                for c in range(channels):
                    for a in range(kh):
                        for b in range(kw):
                            residual[c, top + a, left + b] -= kernels[m, c, a, b] * delta
            else:
                _edge_window(kernels, residual, m, top, left, circular, delta)
        if not changed:
            break
    return sweeps


@njit(cache=True)
def _edge_window(kernels, residual, m, top, left, circular, delta):  # pragma: no cover
    """``⟨K_m, window⟩`` of a coefficient whose window wraps or leaves the image, read before
    ``window −= δ·K_m`` (nothing is written when ``δ = 0``)."""
    channels, kh, kw = kernels.shape[1], kernels.shape[2], kernels.shape[3]
    height, width = residual.shape[1], residual.shape[2]
    corr = 0.0
    for c in range(channels):
        for a in range(kh):
            p = _place(top + a, height, circular)
            if p < 0:
                continue
            for b in range(kw):
                q = _place(left + b, width, circular)
                if q < 0:
                    continue
                corr += kernels[m, c, a, b] * residual[c, p, q]
                if delta != 0.0:
                    residual[c, p, q] -= kernels[m, c, a, b] * delta
    return corr


@njit(cache=True)
def _place(index, size, circular):  # pragma: no cover - compiled
    """``index`` wrapped into ``[0, size)`` (circular), or −1 where it leaves it (clipped)."""
    if circular:
        return index % size
    return index if 0 <= index < size else -1
