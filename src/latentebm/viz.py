"""Figures: atom grids, filter banks, convergence curves, Gabor tiling, image tiles.

Every function takes NumPy arrays (torch tensors are copied to the CPU), checks them (NaN/inf,
wrong shapes raise ``ValueError`` naming the argument), draws on a private matplotlib
``Figure`` with the Agg canvas (no pyplot state, nothing is shown), writes a PNG atomically
(temporary file in the target folder, then ``os.replace``) and returns the path.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics.atoms import as_float_array, atoms_as_images, check_image_shape

__all__ = [
    "atom_grid",
    "convergence_curves",
    "filter_bank_pair",
    "image_grid",
    "orientation_frequency",
]

_SEPARATOR = 1.0  # white 1-pixel lines between tiles
_DPI = 100


# ----------------------------------------------------------------------------- helpers


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(max(width_in, 1.0), max(height_in, 1.0)), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically; returns the path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a directory; give a file name ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=_DPI)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _check_n_cols(n_cols: Any) -> int | None:
    if n_cols is None:
        return None
    if isinstance(n_cols, bool) or not isinstance(n_cols, (int, np.integer)) or n_cols < 1:
        raise ValueError(f"n_cols must be a positive integer or None, got {n_cols!r}")
    return int(n_cols)


def _scale_tiles(tiles: np.ndarray, symmetric: bool) -> np.ndarray:
    """Each ``(h, w, c)`` tile to [0, 1] on its own; symmetric: 0 maps to grey 0.5."""
    axes = tuple(range(1, tiles.ndim))
    if symmetric:
        m = np.abs(tiles).max(axis=axes, keepdims=True)
        return 0.5 + 0.5 * tiles / np.where(m > 0, m, 1.0)
    lo = tiles.min(axis=axes, keepdims=True)
    span = tiles.max(axis=axes, keepdims=True) - lo
    return (tiles - lo) / np.where(span > 0, span, 1.0)


def _mosaic(tiles: np.ndarray, n_cols: int | None) -> np.ndarray:
    """``(n, h, w, c)`` tiles in [0, 1] -> one RGB ``(H, W, 3)`` image with 1-px separators."""
    n, h, w, c = tiles.shape
    if c == 1:
        tiles = np.repeat(tiles, 3, axis=3)
    cols = n_cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, 3), _SEPARATOR)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, cols)
        out[1 + r * (h + 1) : (r + 1) * (h + 1), 1 + q * (w + 1) : (q + 1) * (w + 1)] = tile
    return np.clip(out, 0.0, 1.0)


def _show_mosaic(ax: Any, mosaic: np.ndarray, title: str | None) -> None:
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def _inches(mosaic: np.ndarray) -> tuple[float, float]:
    """Figure size giving each mosaic pixel about 3 screen pixels (capped at 16 in)."""
    ph = 3.0 / _DPI
    h, w = mosaic.shape[:2]
    scale = min(1.0, 16.0 / (w * ph), 16.0 / (h * ph))
    return w * ph * scale, h * ph * scale + 0.5


def _filter_bank(bank: Any, name: str) -> np.ndarray:
    """``(n, C, k, k)`` with C in {1, 3} -> ``(n, k, k, C)``."""
    arr = as_float_array(bank, name, ndim=4)
    if arr.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must be (n_filters, C, kh, kw) with C = 1 (grey) or 3 (colour), "
            f"got shape {arr.shape}"
        )
    return arr.transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- figures


def atom_grid(
    atoms: Any,
    image_shape: Sequence[int],
    path: str | os.PathLike,
    *,
    n_cols: int | None = None,
    title: str | None = None,
    symmetric: bool = True,
) -> Path:
    """Tile ``atoms`` ``(n_atoms, n_features)`` (one atom per row, i.e. ``W.T``) as images.

    ``image_shape`` is ``(h, w)`` (grey) or ``(h, w, 3)`` (colour). Each tile is scaled on its
    own: with ``symmetric`` (default) by its largest magnitude so that grey is 0, black the most
    negative and white the most positive value; otherwise min-max. ``n_cols`` defaults to
    ``ceil(sqrt(n_atoms))`` (256 atoms -> 16 × 16).
    """
    shape = check_image_shape(image_shape)
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise ValueError(f"image_shape must have 1 or 3 channels, got {shape}")
    imgs = atoms_as_images(atoms, shape)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    mosaic = _mosaic(_scale_tiles(imgs, symmetric), _check_n_cols(n_cols))
    fig = _new_figure(*_inches(mosaic))
    _show_mosaic(fig.add_axes((0.02, 0.02, 0.96, 0.9 if title else 0.96)), mosaic, title)
    return _save(fig, path)


def filter_bank_pair(
    encoder: Any,
    decoder: Any,
    path: str | os.PathLike,
    *,
    titles: tuple[str, str] = ("encoder", "decoder"),
    n_cols: int | None = None,
    title: str | None = None,
    symmetric: bool = True,
) -> Path:
    """Two filter banks side by side, e.g. a convolutional auto-encoder's encoder and decoder.

    ``encoder`` and ``decoder``: ``(n_filters, C, kh, kw)`` arrays with ``C`` = 1 or 3 (the
    banks may differ in size). Tiles are scaled on their own as in :func:`atom_grid`.
    """
    enc = _filter_bank(encoder, "encoder")
    dec = _filter_bank(decoder, "decoder")
    if not (isinstance(titles, (tuple, list)) and len(titles) == 2):
        raise ValueError(f"titles must be a pair of strings, got {titles!r}")
    cols = _check_n_cols(n_cols)
    mosaics = [_mosaic(_scale_tiles(b, symmetric), cols) for b in (enc, dec)]
    sizes = [_inches(m) for m in mosaics]
    fig = _new_figure(sizes[0][0] + sizes[1][0] + 0.5, max(s[1] for s in sizes) + 0.3)
    for i, (m, t) in enumerate(zip(mosaics, titles, strict=True)):
        _show_mosaic(fig.add_subplot(1, 2, i + 1), m, str(t))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def image_grid(
    images: Any,
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] | None = None,
    n_cols: int | None = None,
    title: str | None = None,
    value_range: tuple[float, float] | None = None,
) -> Path:
    """Tile images (e.g. data and reconstructions) on one common grey/colour scale.

    ``images``: ``(n, h, w)``, ``(n, h, w, 3)``, or ``(n, n_features)`` with ``image_shape``.
    Unlike :func:`atom_grid`, all tiles share one scale so they can be compared:
    ``value_range = (low, high)`` maps to black/white (default: the data's min and max).
    """
    if image_shape is not None:
        imgs = atoms_as_images(images, image_shape, "images")
    else:
        imgs = as_float_array(images, "images", ndim=(3, 4))
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    if imgs.shape[3] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {imgs.shape}")
    if value_range is None:
        lo, hi = float(imgs.min()), float(imgs.max())
    else:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"value_range must be (low, high), got {value_range!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"value_range must be finite with high > low, got {value_range!r}")
    scaled = (imgs - lo) / (hi - lo) if hi > lo else np.full_like(imgs, 0.5)
    mosaic = _mosaic(scaled, _check_n_cols(n_cols))
    fig = _new_figure(*_inches(mosaic))
    _show_mosaic(fig.add_axes((0.02, 0.02, 0.96, 0.9 if title else 0.96)), mosaic, title)
    return _save(fig, path)


def convergence_curves(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    logy: bool = True,
    logx: bool = False,
    title: str | None = None,
) -> Path:
    """One line per entry of ``curves`` ``{label: (x, y)}`` (1-D, equal lengths).

    With ``logy`` (default), points with ``y <= 0`` (e.g. a gap that reached exactly 0) are not
    drawn; a curve with no positive value is an error. Likewise for ``x`` with ``logx``.
    """
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError("curves must be a non-empty mapping {label: (x, y)}")
    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for label, xy in curves.items():
        if not (isinstance(xy, (tuple, list)) and len(xy) == 2):
            raise ValueError(f"curves[{label!r}] must be a pair (x, y)")
        x = as_float_array(xy[0], f"curves[{label!r}] x", ndim=1)
        y = as_float_array(xy[1], f"curves[{label!r}] y", ndim=1)
        if x.shape != y.shape:
            raise ValueError(
                f"curves[{label!r}]: x and y must have the same length, got {x.size} and {y.size}"
            )
        keep = np.ones(x.size, dtype=bool)
        if logy:
            keep &= y > 0
        if logx:
            keep &= x > 0
        if not keep.any():
            raise ValueError(f"curves[{label!r}] has no positive values to draw on a log scale")
        ax.plot(x[keep], y[keep], label=str(label), linewidth=1.5)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def orientation_frequency(
    orientations_rad: Any,
    frequencies: Any,
    path: str | os.PathLike,
    *,
    r2: Any = None,
    title: str | None = None,
) -> Path:
    """How fitted Gabors tile orientation and spatial frequency (polar plot + rose histogram).

    Left: each atom is a point at angle = orientation (radians; plotted at θ and θ + π since
    orientation is axial) and radius = frequency (cycles/pixel), coloured by ``r2`` when given.
    Right: histogram of orientations over [0, π), mirrored. Inputs: 1-D, equal lengths; use the
    ``theta``/``frequency``/``r2`` of :func:`latentebm.metrics.fit_gabors` (filter out bad fits
    first: NaN is rejected).
    """
    th = as_float_array(orientations_rad, "orientations_rad", ndim=1)
    f = as_float_array(frequencies, "frequencies", ndim=1)
    if f.shape != th.shape:
        raise ValueError(f"frequencies has {f.size} values but orientations_rad has {th.size}")
    if (f < 0).any():
        raise ValueError("frequencies must be >= 0 (cycles/pixel)")
    c = None
    if r2 is not None:
        c = as_float_array(r2, "r2", ndim=1)
        if c.shape != th.shape:
            raise ValueError(f"r2 has {c.size} values but orientations_rad has {th.size}")
    th = th % math.pi
    fig = _new_figure(10.0, 4.8)
    ax = fig.add_subplot(1, 2, 1, projection="polar")
    both = np.concatenate([th, th + math.pi])
    kw: dict[str, Any] = {"s": 14, "alpha": 0.8, "edgecolors": "none"}
    if c is not None:
        sc = ax.scatter(
            both,
            np.concatenate([f, f]),
            c=np.concatenate([c, c]),
            cmap="viridis",
            vmin=min(0.0, float(c.min())),
            vmax=1.0,
            **kw,
        )
        fig.colorbar(sc, ax=ax, shrink=0.7, pad=0.1, label="R²")
    else:
        ax.scatter(both, np.concatenate([f, f]), color="C0", **kw)
    ax.set_rlim(0, max(0.5, float(f.max()) * 1.05))
    ax.set_title("orientation vs frequency (cycles/px)")
    hx = fig.add_subplot(1, 2, 2, projection="polar")
    n_bins = 16
    counts, edges = np.histogram(th, bins=n_bins, range=(0.0, math.pi))
    width = math.pi / n_bins
    for shift in (0.0, math.pi):
        hx.bar(
            edges[:-1] + shift,
            counts,
            width=width,
            align="edge",
            color="C1",
            edgecolor="k",
            linewidth=0.5,
        )
    hx.set_title(f"orientations (n = {th.size})")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
