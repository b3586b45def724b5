"""What do the atoms look like? Quantitative shape metrics for learned dictionaries.

Conventions shared by every function here:

- ``atoms`` is ``(n_atoms, n_features)``: one flattened atom per row, i.e. ``W.T`` for a
  dictionary ``W`` of shape ``(n_features, n_atoms)``. Rows reshape in C order to
  ``image_shape`` = ``(h, w)`` or ``(h, w, channels)``.
- Image coordinates: ``x`` is the column index, ``y`` the row index (pointing down), both in
  pixels with the first pixel's centre at 0. Angles are in radians, measured from the +x axis
  towards +y.
- Inputs are NumPy arrays (torch tensors are accepted and copied to the CPU); NaN/inf, wrong
  rank or shape raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares
from scipy.signal import fftconvolve

from .._docs import fill_doc
from .._validation import as_tensor, check_int

__all__ = [
    "LOCALIZED_THRESHOLD",
    "GOOD_GABOR_R2",
    "ORIENTED_MAX_SELF_SIMILARITY",
    "POINT_WIDTH",
    "DoGFit",
    "GaborFit",
    "STROKE_LEVEL",
    "centre_surround_score",
    "fit_dog",
    "fit_gabor",
    "fit_gabors",
    "gabor_summary",
    "is_oriented",
    "localization_score",
    "localization_summary",
    "orientation_spread",
    "orientation_coverage",
    "rotation_self_similarity",
    "stroke_spans",
    "stroke_summary",
]

#: Score at or above which :func:`localization_summary` counts an atom as localised.
LOCALIZED_THRESHOLD = 0.75
#: Share of an atom's peak magnitude above which a pixel counts as ink in :func:`stroke_spans`.
STROKE_LEVEL = 0.3
#: R² at or above which a Gabor fit counts as good in :func:`gabor_summary`.
GOOD_GABOR_R2 = 0.8
#: Largest :func:`rotation_self_similarity` of an oriented fit. Measured on 11×11 synthetic
#: filters with 2 % noise: blobs and centre-surround 0.97–1.00; edges, steps and odd Gabors
#: 0.00; even Gabors 0.01–0.74; bars three times longer than wide 0.58–0.60.
ORIENTED_MAX_SELF_SIMILARITY = 0.9
#: Largest envelope width (pixels, both axes) of a fit that resolves no shape: a one-pixel atom
#: fits with both widths at :func:`fit_gabor`'s 0.5-pixel bound and any orientation.
POINT_WIDTH = 0.6


# ----------------------------------------------------------------------------- validation


@fill_doc
def as_float_array(x: Any, name: str, *, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as a finite float64 NumPy array of the given rank (``ValueError`` names ``name``).

    Parameters
    ----------
    x : array_like or torch.Tensor
        The input (a tensor is copied to the CPU).
    {error_name}
    ndim : int or tuple of int or None
        Allowed rank(s); ``None`` accepts any.

    Returns
    -------
    ndarray
        float64 copy of ``x``, same shape.
    """
    t = as_tensor(x, name, ndim=ndim, dtype=torch.float64)
    return t.detach().cpu().numpy()


@fill_doc
def check_image_shape(image_shape: Any, name: str = "image_shape") -> tuple[int, ...]:
    """``(h, w)`` or ``(h, w, channels)`` with positive integer entries.

    Parameters
    ----------
    image_shape : sequence of int
        The shape to check.
    {error_name}

    {returns_shape}
        The shape, length 2 or 3.
    """
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a tuple of ints, got {image_shape!r}") from exc
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"{name} must be (h, w) or (h, w, channels) with sizes >= 1, got {shape}")
    if any(int(s) != s for s in image_shape):
        raise ValueError(f"{name} must hold integers, got {image_shape!r}")
    return shape


@fill_doc
def atoms_as_images(atoms: Any, image_shape: Any, name: str = "atoms") -> np.ndarray:
    """Validate ``(n_atoms, n_features)`` atoms and reshape them to ``(n_atoms, *image_shape)``.

    Parameters
    ----------
    {atoms_rows}
    {error_name}

    Returns
    -------
    ndarray of shape (n_atoms, h, w) or (n_atoms, h, w, channels)
        float64 images (C-order reshape of each row).
    """
    shape = check_image_shape(image_shape)
    arr = as_float_array(atoms, name, ndim=2)
    if arr.shape[1] != math.prod(shape):
        raise ValueError(
            f"{name} has {arr.shape[1]} features per atom but image_shape {shape} "
            f"holds {math.prod(shape)}"
        )
    return arr.reshape((arr.shape[0], *shape))


def _image_2d(x: Any, name: str, min_size: int = 3) -> np.ndarray:
    arr = as_float_array(x, name, ndim=2)
    if min(arr.shape) < min_size:
        raise ValueError(f"{name} must be at least {min_size}x{min_size}, got shape {arr.shape}")
    return arr


# ----------------------------------------------------------------------------- localisation


def _disc(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx**2 + yy**2 <= radius**2 + 1e-9).astype(np.float64)


@fill_doc
def localization_score(
    atoms: Any, image_shape: Sequence[int], *, radius: float | None = None
) -> np.ndarray:
    """Share of each atom's energy that the best-placed disc of a fixed radius holds.

    ``energy = atom**2`` (summed over colour channels); the score is
    ``max over disc centres c of  sum_{|p - c| <= radius} energy(p) / sum_p energy(p)``,
    with centres on the pixel grid. Range (0, 1]: near 1 for a spatially localised stroke or
    blob that fits in the disc, low for an atom spread over the image (a whole digit, a
    plane wave, noise). Taking the best disc (not one at the energy centroid) keeps curved
    strokes scoring high; small diffuse noise lowers the score by its share of the energy.

    The background is taken to be 0 (true for MNIST-like data; subtract your background
    first otherwise).

    Parameters
    ----------
    {atoms_rows}
    radius : float or None
        Disc radius in pixels (>= 0.5); defaults to ``0.2 * min(h, w)`` (5.6 px for 28×28
        MNIST).

    Returns
    -------
    ndarray of shape (n_atoms,)
        float64 scores in (0, 1]; NaN for an all-zero atom.
    """
    imgs = atoms_as_images(atoms, image_shape)
    h, w = imgs.shape[1:3]
    if radius is None:
        radius = 0.2 * min(h, w)
    if isinstance(radius, bool) or not (
        isinstance(radius, Real) and math.isfinite(radius) and radius >= 0.5
    ):
        raise ValueError(f"radius must be a finite number >= 0.5 pixels, got {radius!r}")
    energy = imgs**2
    if energy.ndim == 4:
        energy = energy.sum(axis=3)
    total = energy.sum(axis=(1, 2))
    in_disc = fftconvolve(energy, _disc(radius)[None], mode="same", axes=(1, 2))
    best = in_disc.reshape(len(energy), -1).max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(total > 0, best / np.where(total > 0, total, 1.0), np.nan)
    return np.clip(score, 0.0, 1.0)


@fill_doc
def localization_summary(
    atoms: Any,
    image_shape: Sequence[int],
    *,
    radius: float | None = None,
    threshold: float = LOCALIZED_THRESHOLD,
) -> dict[str, float]:
    """Median / mean :func:`localization_score` and the share of atoms scoring ``>= threshold``.

    The default threshold (0.75) was calibrated on 28×28 at the default radius (5.6 px):
    synthetic pen strokes (6-14 px lines and arcs) have median 1.00 and 99 % score >= 0.75
    (84 % still do with 20 % of their energy in white noise); the 10 000 MNIST test digits
    have median 0.51 (5-95 %: 0.37-0.68) and 0.4 % score >= 0.75; pure noise scores ~0.16.
    All-zero atoms (NaN score) are left out and counted in ``n_zero``.

    Parameters
    ----------
    {atoms_rows}
    radius : float or None
        Disc radius in pixels, as in :func:`localization_score`.
    threshold : float
        Score at or above which an atom counts as localised.

    Returns
    -------
    dict
        ``n_atoms``, ``n_zero``, ``radius``, ``threshold``, ``median``, ``mean`` and
        ``share_localized`` (NaN when every atom is zero).
    """
    scores = localization_score(atoms, image_shape, radius=radius)
    h, w = check_image_shape(image_shape)[:2]
    valid = scores[np.isfinite(scores)]
    nan = float("nan")
    return {
        "n_atoms": int(scores.size),
        "n_zero": int(scores.size - valid.size),
        "radius": float(0.2 * min(h, w) if radius is None else radius),
        "threshold": float(threshold),
        "median": float(np.median(valid)) if valid.size else nan,
        "mean": float(valid.mean()) if valid.size else nan,
        "share_localized": float((valid >= threshold).mean()) if valid.size else nan,
    }


# ----------------------------------------------------------------------------- strokes


@fill_doc
def stroke_spans(
    atoms: Any, image_shape: Sequence[int], *, level: float = STROKE_LEVEL
) -> np.ndarray:
    """Side of the bounding box of each atom's ink, in pixels.

    Ink is every pixel whose magnitude ``|atom|`` (the largest over colour channels) is at least
    ``level`` times the atom's peak magnitude; both signs count, as both show in an atom figure.
    The span is the larger of the ink's height and width (``last − first + 1`` rows or columns).
    A pen stroke spans a few to about 14 px of a 28×28 image; a whole MNIST digit spans about
    20 px (the digits are scaled to fit a 20×20 box).

    Parameters
    ----------
    {atoms_rows}
    level : float
        Ink threshold as a share of the atom's peak magnitude, in (0, 1].

    Returns
    -------
    ndarray of shape (n_atoms,)
        float64 spans in pixels; NaN for an all-zero atom.
    """
    imgs = atoms_as_images(atoms, image_shape)
    if isinstance(level, bool) or not (isinstance(level, Real) and 0 < level <= 1):
        raise ValueError(f"level must be a number in (0, 1], got {level!r}")
    mag = np.abs(imgs)
    if mag.ndim == 4:
        mag = mag.max(axis=3)
    peak = mag.max(axis=(1, 2))
    ink = mag >= level * peak[:, None, None]
    spans = np.full(len(mag), np.nan)
    for i in np.flatnonzero(peak > 0):
        rows = np.flatnonzero(ink[i].any(axis=1))
        cols = np.flatnonzero(ink[i].any(axis=0))
        spans[i] = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    return spans


@fill_doc
def stroke_summary(
    atoms: Any,
    image_shape: Sequence[int],
    *,
    level: float = STROKE_LEVEL,
    max_span: float | None = None,
) -> dict[str, float]:
    """Share of atoms that are pen strokes: their ink (see :func:`stroke_spans`) fits in a
    ``max_span`` square.

    Calibration on 28×28: 3 of the 60 000 MNIST training digits count as strokes (share 5e-5;
    all but 139 span 20 px or more at ``level`` 0.3, the narrowest 14 px); synthetic 6-14 px
    lines and arcs are 100 %; by eye, atoms
    spanning 15 px or more read as whole digits or as two strokes joined.

    Parameters
    ----------
    {atoms_rows}
    level : float
        Ink threshold, as in :func:`stroke_spans`.
    max_span : float or None
        Largest span (px, >= 1) of a stroke; defaults to half the image's smaller side (14 px
        for 28×28 MNIST).

    Returns
    -------
    dict
        ``share`` (of the non-zero atoms), ``n_strokes``, ``n_atoms``, ``n_zero`` (all-zero
        atoms, left out), ``median_span`` (px), ``level`` and ``max_span``.
    """
    h, w = check_image_shape(image_shape)[:2]
    if max_span is None:
        max_span = min(h, w) / 2
    if isinstance(max_span, bool) or not (isinstance(max_span, Real) and max_span >= 1):
        raise ValueError(f"max_span must be a number >= 1 (pixels), got {max_span!r}")
    spans = stroke_spans(atoms, image_shape, level=level)
    valid = spans[np.isfinite(spans)]
    n_strokes = int((valid <= max_span).sum())
    nan = float("nan")
    return {
        "share": n_strokes / valid.size if valid.size else nan,
        "n_strokes": n_strokes,
        "n_atoms": int(spans.size),
        "n_zero": int(spans.size - valid.size),
        "median_span": float(np.median(valid)) if valid.size else nan,
        "level": float(level),
        "max_span": float(max_span),
    }


# ----------------------------------------------------------------------------- Gabor fits


@dataclass(frozen=True)
class GaborFit:
    """A 2-D Gabor fitted to one atom (pixel units, conventions in the module docstring).

    ``g(x, y) = amplitude · exp(−u²/(2 sigma_x²) − v²/(2 sigma_y²)) · cos(2π frequency u + phase)
    + offset`` with ``u = (x − x0) cos θ + (y − y0) sin θ`` (along the carrier's wave vector)
    and ``v = −(x − x0) sin θ + (y − y0) cos θ`` (along the stripes). So ``theta`` ∈ [0, π) is the
    direction the grating varies in (edges/stripes run at ``theta + π/2``), ``frequency`` is in
    cycles/pixel ∈ [0, 0.5], ``phase`` ∈ (−π, π] (0: even/symmetric, ±π/2: odd/edge-like),
    ``amplitude`` ≥ 0. ``r2 = 1 − SS_res / SS_tot`` on the atom's pixels; NaN (and NaN
    parameters) for a constant atom.
    """

    x0: float
    y0: float
    theta: float
    frequency: float
    phase: float
    sigma_x: float
    sigma_y: float
    amplitude: float
    offset: float
    r2: float


def _gabor_parts(p: np.ndarray, x: np.ndarray, y: np.ndarray):
    x0, y0, th, f, ph, sx, sy, a, c = p
    ct, st = math.cos(th), math.sin(th)
    dx, dy = x - x0, y - y0
    u = dx * ct + dy * st
    v = -dx * st + dy * ct
    env = np.exp(-(u**2) / (2 * sx**2) - v**2 / (2 * sy**2))
    arg = 2 * math.pi * f * u + ph
    return u, v, ct, st, env, np.cos(arg), np.sin(arg), a, c


def _gabor_residual(p: np.ndarray, x: np.ndarray, y: np.ndarray, target: np.ndarray) -> np.ndarray:
    _, _, _, _, env, cos, _, a, c = _gabor_parts(p, x, y)
    return a * env * cos + c - target


def _gabor_jacobian(p: np.ndarray, x: np.ndarray, y: np.ndarray, target: np.ndarray) -> np.ndarray:
    u, v, ct, st, env, cos, sin, a, _ = _gabor_parts(p, x, y)
    f, sx, sy = p[3], p[5], p[6]
    ec, es = env * cos, env * sin
    d_u = a * (-(u / sx**2) * ec - 2 * math.pi * f * es)  # ∂g/∂u
    d_v = -a * (v / sy**2) * ec  # ∂g/∂v
    jac = np.empty((x.size, 9))
    jac[:, 0] = -d_u * ct + d_v * st  # x0
    jac[:, 1] = -d_u * st - d_v * ct  # y0
    jac[:, 2] = d_u * v - d_v * u  # theta
    jac[:, 3] = -a * es * 2 * math.pi * u  # frequency
    jac[:, 4] = -a * es  # phase
    jac[:, 5] = a * ec * u**2 / sx**3
    jac[:, 6] = a * ec * v**2 / sy**3
    jac[:, 7] = ec
    jac[:, 8] = 1.0
    return jac


def _fft_peak(img: np.ndarray) -> tuple[float, float]:
    """(frequency in cycles/pixel, wave-vector angle) of the strongest non-DC Fourier peak."""
    h, w = img.shape
    n = max(32, 2 * max(h, w))
    spec = np.abs(np.fft.rfft2(img - img.mean(), s=(n, n)))
    spec[0, 0] = 0.0
    i, j = np.unravel_index(int(np.argmax(spec)), spec.shape)
    fy = np.fft.fftfreq(n)[i]
    fx = np.fft.rfftfreq(n)[j]
    return float(math.hypot(fx, fy)), float(math.atan2(fy, fx))


def _initial_guesses(
    img: np.ndarray, x: np.ndarray, y: np.ndarray, n_keep: int
) -> list[np.ndarray]:
    """Grid over centre, orientation, frequency and width; phase, amplitude and offset solved
    by linear least squares for each grid point; the ``n_keep`` best points are returned."""
    h, w = img.shape
    t = img.ravel()
    e = (t - t.mean()) ** 2
    centres = [(float((e * x).sum() / e.sum()), float((e * y).sum() / e.sum()))]
    k = int(np.argmax(e))
    centres.append((float(x[k]), float(y[k])))
    f_peak, th_peak = _fft_peak(img)
    f_lo = 1.0 / (2 * max(h, w))
    freqs = np.clip(np.array([0.7, 1.0, 1.4]) * max(f_peak, f_lo), f_lo, 0.45)
    thetas = np.concatenate([[th_peak % math.pi], np.arange(8) * math.pi / 8])
    sigmas = np.array([0.15, 0.3]) * min(h, w)
    grid = np.array(
        [(cx, cy, th, f, s) for cx, cy in centres for th in thetas for f in freqs for s in sigmas]
    )
    cx, cy, th, f, s = (grid[:, i : i + 1] for i in range(5))
    u = (x - cx) * np.cos(th) + (y - cy) * np.sin(th)
    v = -(x - cx) * np.sin(th) + (y - cy) * np.cos(th)
    env = np.exp(-(u**2 + v**2) / (2 * s**2))
    arg = 2 * math.pi * f * u
    basis = np.stack([env * np.cos(arg), env * np.sin(arg), np.ones_like(u)], axis=2)
    gram = basis.transpose(0, 2, 1) @ basis + 1e-9 * np.eye(3)
    coef = np.linalg.solve(gram, (basis.transpose(0, 2, 1) @ t)[:, :, None])[:, :, 0]
    sse = (((basis @ coef[:, :, None])[:, :, 0] - t) ** 2).sum(axis=1)
    order = np.argsort(sse)[:n_keep]
    starts = []
    for i in order:
        ca, sa, c = coef[i]
        starts.append(
            np.array(
                [
                    *grid[i, :2],
                    grid[i, 2],
                    grid[i, 3],
                    math.atan2(-sa, ca),
                    grid[i, 4],
                    grid[i, 4],
                    math.hypot(ca, sa),
                    c,
                ]
            )
        )
    return starts


def _canonical_gabor(p: np.ndarray, scale: float, r2: float) -> GaborFit:
    x0, y0, th, f, ph, sx, sy, a, c = (float(v) for v in p)
    if a < 0:
        a, ph = -a, ph + math.pi
    th = th % (2 * math.pi)
    if th >= math.pi:  # θ + π flips u, which is the same Gabor with the phase negated
        th, ph = th - math.pi, -ph
    if math.pi - th < 1e-9:  # a fit a rounding below 0 is θ = 0, not just under π
        th, ph = 0.0, -ph
    ph = math.pi - (math.pi - ph) % (2 * math.pi)  # wrap to (−π, π]
    return GaborFit(x0, y0, th, f, ph, sx, sy, a * scale, c * scale, r2)


def _best_least_squares(residual, jacobian, starts, bounds, args, *, max_nfev: int):
    """The lowest-cost of SciPy's trust-region least-squares fits from each of ``starts``."""
    fits = [least_squares(residual, p0, jac=jacobian, bounds=bounds, args=args, method="trf",
                          x_scale="jac", max_nfev=max_nfev, ftol=1e-6, xtol=1e-6)
            for p0 in starts]
    return min(fits, key=lambda res: res.cost)


def fit_gabor(atom_2d: Any, *, n_starts: int = 3) -> GaborFit:
    """Fit a 2-D Gabor (see :class:`GaborFit`) to one ``(h, w)`` atom by least squares.

    Deterministic: a grid of starts (centres at the energy centroid and the energy peak,
    orientations every π/8 plus the FFT peak's, frequencies around the FFT peak, two widths;
    phase/amplitude/offset solved linearly) is ranked, and the ``n_starts`` best are refined
    with ``scipy.optimize.least_squares`` (analytic Jacobian) under bounds: centre inside the
    patch, frequency in [0, 0.5] cycles/pixel, envelope widths in [0.5, max(h, w)] pixels.

    Parameters
    ----------
    atom_2d : array_like of shape (h, w)
        One grey atom, at least 3×3.
    n_starts : int
        Starts refined by least squares.

    Returns
    -------
    GaborFit
        The best fit (all NaN for a constant atom).
    """
    img = _image_2d(atom_2d, "atom_2d")
    n_starts = check_int(n_starts, "n_starts", low=1)
    h, w = img.shape
    nan = float("nan")
    # judged at unit peak: an atom of 1e-12 (or 1e160) is fitted like the same atom of 1
    peak = float(np.abs(img).max())
    spread = float((img / peak).std()) if peak > 0 else 0.0
    if spread <= 1e-12:
        return GaborFit(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    scale = spread * peak
    t = (img / scale).ravel()
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    big = float(max(h, w))
    lo = np.array([-0.5, -0.5, -np.inf, 0.0, -np.inf, 0.5, 0.5, -np.inf, -np.inf])
    hi = np.array([w - 0.5, h - 0.5, np.inf, 0.5, np.inf, big, big, np.inf, np.inf])
    starts = [np.clip(p0, lo + 1e-6, hi - 1e-6)
              for p0 in _initial_guesses(img / scale, x, y, n_starts)]
    best = _best_least_squares(_gabor_residual, _gabor_jacobian, starts, (lo, hi), (x, y, t),
                               max_nfev=200)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - 2.0 * float(best.cost) / ss_tot
    return _canonical_gabor(best.x, scale, r2)


def fit_gabors(atoms: Any, patch_shape: Sequence[int], *, n_starts: int = 3) -> list[GaborFit]:
    """:func:`fit_gabor` on every row of ``atoms`` ``(n_atoms, h*w)``; ``patch_shape = (h, w)``.

    Parameters
    ----------
    atoms : array_like of shape (n_atoms, h * w)
        Grey atoms, one per row.
    patch_shape : tuple of (int, int)
        ``(h, w)``, at least 3×3.
    n_starts : int
        Starts refined per atom.

    Returns
    -------
    list of GaborFit
        One fit per atom, in order.
    """
    shape = check_image_shape(patch_shape, "patch_shape")
    if len(shape) != 2:
        raise ValueError(f"patch_shape must be (h, w) for grey-level atoms, got {shape}")
    if min(shape) < 3:
        raise ValueError(f"patch_shape must be at least 3x3, got {shape}")
    imgs = atoms_as_images(atoms, shape)
    return [fit_gabor(img, n_starts=n_starts) for img in imgs]


def rotation_self_similarity(fit: GaborFit) -> float:
    """How much a fitted Gabor looks like itself turned by 90°, in [−1, 1].

    ``⟨g, g∘R⟩ / ⟨g, g⟩`` for the fit's envelope times carrier ``g`` (no offset), ``R`` the
    quarter turn about its centre. A blob or a centre-surround filter, which a Gabor of low
    frequency and round envelope fits as well as an edge, is close to 1 and has no orientation;
    an edge or a grating is close to 0.

    Parameters
    ----------
    fit : GaborFit
        From :func:`fit_gabor`.

    Returns
    -------
    float
        NaN for the NaN fit of a constant atom.
    """
    if not math.isfinite(fit.r2):
        return float("nan")
    half = 4 * max(fit.sigma_x, fit.sigma_y)
    t = np.linspace(-half, half, 129)
    u, v = np.meshgrid(t, t, indexing="ij")

    def gabor(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        envelope = np.exp(-(u**2) / (2 * fit.sigma_x**2) - v**2 / (2 * fit.sigma_y**2))
        return envelope * np.cos(2 * math.pi * fit.frequency * u + fit.phase)

    g, turned = gabor(u, v), gabor(v, -u)
    return float((g * turned).sum() / (g * g).sum())


def is_oriented(fit: GaborFit, *, r2_threshold: float = GOOD_GABOR_R2) -> bool:
    """A good Gabor fit (``r2 ≥ r2_threshold``) that is not its own quarter turn
    (:func:`rotation_self_similarity` at most :data:`ORIENTED_MAX_SELF_SIMILARITY`) and not a
    point (an envelope wider than :data:`POINT_WIDTH` on some axis).

    Parameters
    ----------
    fit : GaborFit
        From :func:`fit_gabor`.
    r2_threshold : float
        R² a good fit reaches.

    Returns
    -------
    bool
    """
    return (bool(fit.r2 >= r2_threshold) and max(fit.sigma_x, fit.sigma_y) > POINT_WIDTH
            and rotation_self_similarity(fit) <= ORIENTED_MAX_SELF_SIMILARITY)


def orientation_spread(thetas: Any) -> float:
    """Circular spread of orientations (axial data, period π), in [0, 1].

    ``1 − |mean(exp(2iθ))|``: 0 when all orientations are identical, close to 1 when they are
    spread uniformly over [0, π) (exactly 1 for evenly spaced angles; about ``1 − 1/√n`` on
    average for ``n`` random ones).

    Parameters
    ----------
    thetas : array_like of shape (n,)
        Orientations in radians, any range (θ and θ + π agree).

    Returns
    -------
    float
        The spread.
    """
    th = as_float_array(thetas, "thetas", ndim=1)
    return float(1.0 - abs(np.exp(2j * th).mean()))


def orientation_coverage(thetas: Any, n_bins: int = 8) -> float:
    """Share of ``n_bins`` orientation bins over [0, π) that hold at least one orientation.

    Bin ``k`` is centred on ``k·π/n_bins`` (so 0 and π/2, horizontal and vertical, are bin
    centres). Unlike :func:`orientation_spread` it grows as a filter bank adds orientations:
    one orientation gives ``1/n_bins``, two orthogonal ones ``2/n_bins``, a bank that tiles
    every bin 1. An empty ``thetas`` gives 0.

    Parameters
    ----------
    thetas : array_like of shape (n,)
        Orientations in radians, any range (θ and θ + π agree).
    n_bins : int, default=8
        Number of bins (22.5° each for 8).

    Returns
    -------
    float
        The covered share, in [0, 1].
    """
    n_bins = check_int(n_bins, "n_bins", low=1)
    if np.size(thetas) == 0:
        return 0.0
    th = as_float_array(thetas, "thetas", ndim=1)
    width = math.pi / n_bins
    bins = np.floor(np.mod(th + width / 2, math.pi) / width).astype(int) % n_bins
    return float(len(np.unique(bins)) / n_bins)


def gabor_summary(fits: Sequence[GaborFit], *, r2_threshold: float = GOOD_GABOR_R2) -> dict:
    """Summary statistics of Gabor fits.

    Parameters
    ----------
    fits : sequence of GaborFit
        Non-empty, e.g. from :func:`fit_gabors`.
    r2_threshold : float
        R² at or above which a fit counts as good.

    Returns
    -------
    dict
        ``n_atoms``, ``n_constant`` (NaN fits, left out of every statistic), ``median_r2``,
        ``mean_r2``, ``share_r2_ge_0_8`` (always at 0.8), ``r2_threshold``; over the good
        fits (``r2 >= r2_threshold``): ``n_good``, ``median_frequency`` (cycles/pixel),
        ``median_sigma`` (geometric mean of the two widths, pixels), ``median_aspect_ratio``
        (``sigma_y / sigma_x``: >1 means elongated along the stripes), ``median_abs_phase``;
        over the good fits that have an orientation (:func:`is_oriented`; a blob's ``theta``
        means nothing): ``n_oriented``, ``orientation_spread`` (see
        :func:`orientation_spread`), ``mean_orientation`` (circular mean on doubled angles,
        radians in [0, π)), ``orientation_resultant`` (``|mean exp(2iθ)|``). NaN where there
        is nothing to summarise.
    """
    if isinstance(fits, GaborFit) or not all(isinstance(f, GaborFit) for f in fits):
        raise ValueError("fits must be a sequence of GaborFit (from fit_gabors)")
    if len(fits) == 0:
        raise ValueError("fits is empty")
    nan = float("nan")
    r2 = np.array([f.r2 for f in fits], dtype=np.float64)
    ok = np.isfinite(r2)
    good = [f for f, g in zip(fits, ok & (r2 >= r2_threshold), strict=True) if g]
    out: dict[str, float | int] = {
        "n_atoms": len(fits),
        "n_constant": int((~ok).sum()),
        "median_r2": float(np.median(r2[ok])) if ok.any() else nan,
        "mean_r2": float(r2[ok].mean()) if ok.any() else nan,
        "share_r2_ge_0_8": float((r2[ok] >= 0.8).mean()) if ok.any() else nan,
        "r2_threshold": float(r2_threshold),
        "n_good": len(good),
    }
    oriented = [f for f in good if is_oriented(f, r2_threshold=r2_threshold)]
    out["n_oriented"] = len(oriented)
    for key in ("orientation_spread", "orientation_resultant", "mean_orientation",
                "median_frequency", "median_sigma", "median_aspect_ratio", "median_abs_phase"):
        out[key] = nan
    if good:
        sx = np.array([f.sigma_x for f in good])
        sy = np.array([f.sigma_y for f in good])
        out.update(
            median_frequency=float(np.median([f.frequency for f in good])),
            median_sigma=float(np.median(np.sqrt(sx * sy))),
            median_aspect_ratio=float(np.median(sy / sx)),
            median_abs_phase=float(np.median(np.abs([f.phase for f in good]))),
        )
    if oriented:
        mean_vec = np.exp(2j * np.array([f.theta for f in oriented])).mean()
        out.update(
            orientation_spread=float(1.0 - abs(mean_vec)),
            orientation_resultant=float(abs(mean_vec)),
            mean_orientation=float((np.angle(mean_vec) / 2) % math.pi),
        )
    return out


# ----------------------------------------------------------------------------- centre-surround


@dataclass(frozen=True)
class DoGFit:
    """An isotropic difference of Gaussians fitted to one filter (pixel units).

    ``g(r) = amplitude · [exp(−r²/(2 σ_c²)) − balance · (σ_c/σ_s)² · exp(−r²/(2 σ_s²))]``
    (``σ_c = sigma_c``, ``σ_s = sigma_s``), ``r`` the distance to ``(x0, y0)``,
    ``sigma_s > sigma_c`` and no constant offset (the surround *is* the background).
    ``balance`` ∈ [0, 2] is the surround's integrated weight over the centre's, with the
    opposite sign: 0 is a plain blob, 1 a zero-mean (balanced) DoG.
    ``amplitude`` < 0 is an off-centre cell. ``r2 = 1 − SS_res/SS_tot`` (NaN: constant filter).
    """

    x0: float
    y0: float
    amplitude: float
    sigma_c: float
    sigma_s: float
    balance: float
    r2: float


def _dog_parts(p: np.ndarray, x: np.ndarray, y: np.ndarray):
    x0, y0, a, sc, ratio, k = p
    dx, dy = x - x0, y - y0
    r2 = dx**2 + dy**2
    centre = np.exp(-r2 / (2 * sc**2))
    surround = np.exp(-r2 / (2 * (sc * ratio) ** 2))
    return dx, dy, r2, centre, surround, a, sc, ratio, k


def _dog_residual(p: np.ndarray, x: np.ndarray, y: np.ndarray, target: np.ndarray) -> np.ndarray:
    _, _, _, centre, surround, a, _, ratio, k = _dog_parts(p, x, y)
    return a * (centre - k / ratio**2 * surround) - target


def _dog_jacobian(p: np.ndarray, x: np.ndarray, y: np.ndarray, target: np.ndarray) -> np.ndarray:
    dx, dy, r2, centre, surround, a, sc, ratio, k = _dog_parts(p, x, y)
    weighted = centre - k / ratio**4 * surround  # ∂/∂(x0, y0) share this factor
    jac = np.empty((x.size, 6))
    jac[:, 0] = a * dx / sc**2 * weighted
    jac[:, 1] = a * dy / sc**2 * weighted
    jac[:, 2] = centre - k / ratio**2 * surround
    jac[:, 3] = a * r2 / sc**3 * weighted
    jac[:, 4] = -a * k * surround * (r2 / (sc**2 * ratio**5) - 2 / ratio**3)
    jac[:, 5] = -a / ratio**2 * surround
    return jac


@fill_doc
def fit_dog(filter_2d: Any) -> DoGFit:
    """Least-squares fit of :class:`DoGFit` to a ``(h, w)`` filter.

    A few deterministic starts: centre at the largest-magnitude pixel and at the energy centroid,
    centre width 1 px or ``min(h, w)/8``, surround ``3×`` wider, balance 1. Bounds: centre
    inside the patch, ``sigma_c`` ∈ [0.3, max(h, w)/2], ``sigma_s / sigma_c`` ∈ [1.2, 10].

    Parameters
    ----------
    {filter_2d}

    Returns
    -------
    DoGFit
        The best fit (all NaN for a constant filter).
    """
    img = _image_2d(filter_2d, "filter_2d")
    h, w = img.shape
    nan = float("nan")
    # judged at unit peak: a filter of 1e-30 (or 1e160) is fitted like the same filter of 1
    scale = float(np.abs(img).max())
    t = img.ravel() / (scale if scale > 0 else 1.0)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    if ss_tot <= 1e-24 * float((t**2).sum()) or scale == 0:
        return DoGFit(nan, nan, nan, nan, nan, nan, nan)
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    e = t**2
    k = int(np.argmax(e))
    centres = [(x[k], y[k]), (float((e * x).sum() / e.sum()), float((e * y).sum() / e.sum()))]
    lo = np.array([-0.5, -0.5, -np.inf, 0.3, 1.2, 0.0])
    hi = np.array([w - 0.5, h - 0.5, np.inf, max(h, w) / 2, 10.0, 2.0])
    starts = []
    for cx, cy in centres:
        amp = t[int(round(cy)) * w + int(round(cx))]
        for sc in (1.0, max(1.0, min(h, w) / 8)):
            starts.append(np.clip([cx, cy, amp if amp != 0 else 1.0, sc, 3.0, 1.0],
                                  lo + 1e-6, hi - 1e-6))
    best = _best_least_squares(_dog_residual, _dog_jacobian, starts, (lo, hi), (x, y, t),
                               max_nfev=100)
    x0, y0, a, sc, ratio, bal = (float(v) for v in best.x)
    r2 = 1.0 - 2.0 * float(best.cost) / ss_tot
    return DoGFit(x0, y0, a * scale, sc, sc * ratio, bal, r2)


@fill_doc
def centre_surround_score(filter_2d: Any) -> float:
    """How much a ``(h, w)`` filter looks like a centre-surround (DoG) receptive field, in [0, 1].

    ``max(R², 0) · min(balance, 1)`` of :func:`fit_dog`: the share of the filter's variance an
    isotropic DoG explains, times how strongly the fitted surround opposes the centre
    (0 for a plain blob, 1 for a balanced, zero-mean DoG). Oriented filters (Gabors, edges)
    score lower because no isotropic DoG explains them.

    Parameters
    ----------
    {filter_2d}

    Returns
    -------
    float
        The score in [0, 1]; 0 for a constant filter.
    """
    fit = fit_dog(filter_2d)
    if not math.isfinite(fit.r2):
        return 0.0
    return float(max(fit.r2, 0.0) * min(fit.balance, 1.0))
