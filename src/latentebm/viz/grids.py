"""Image mosaics: atom grids, filter banks side by side, image tiles.

Every function takes NumPy arrays (torch tensors are copied to the CPU), checks them (NaN/inf,
wrong shapes raise ``ValueError`` naming the argument), draws with :func:`new_figure`, writes a
PNG atomically with :func:`save_png` and returns the path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._docs import fill_doc
from ..metrics.atoms import as_float_array, atoms_as_images, check_image_shape
from ._figure import DPI, check_n_cols, new_figure, save_png

__all__ = ["atom_grid", "filter_bank_pair", "image_grid"]

_SEPARATOR = 1.0  # white 1-pixel lines between tiles


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


#: Screen pixels a drawn kernel gets at least (small kernels are magnified to this).
MIN_TILE_PX = 48


def _inches(mosaic: np.ndarray, tile: int | None = None) -> tuple[float, float]:
    """Figure size giving each mosaic pixel about 3 screen pixels, or more so that a tile of
    side ``tile`` gets at least :data:`MIN_TILE_PX` (capped at 16 in)."""
    ph = (3.0 if tile is None else max(3.0, MIN_TILE_PX / tile)) / DPI
    h, w = mosaic.shape[:2]
    scale = min(1.0, 16.0 / (w * ph), 16.0 / (h * ph))
    return w * ph * scale, h * ph * scale + 0.5


@fill_doc
def _write_mosaic(tiles: np.ndarray, n_cols: Any, title: str | None,
                  path: str | os.PathLike) -> Path:
    """One mosaic of ``tiles`` with ``title`` above, written as a PNG.

    Parameters
    ----------
    tiles : numpy.ndarray of shape (n, h, w, c)
        Tiles scaled to [0, 1], ``c`` = 1 or 3.
    n_cols : int or None
        Columns of the grid, checked here (default ``ceil(sqrt(n))``).
    title : str or None
        Title above the grid.
    {png_path}

    {returns_png}
    """
    mosaic = _mosaic(tiles, check_n_cols(n_cols))
    fig = new_figure(*_inches(mosaic, tile=max(tiles.shape[1:3])))
    _show_mosaic(fig.add_axes((0.02, 0.02, 0.96, 0.9 if title else 0.96)), mosaic, title)
    return save_png(fig, path)


def _filter_bank(bank: Any, name: str) -> np.ndarray:
    """``(n, C, k, k)`` with C in {1, 3} -> ``(n, k, k, C)``."""
    arr = as_float_array(bank, name, ndim=4)
    if arr.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must be (n_filters, C, kh, kw) with C = 1 (grey) or 3 (colour), "
            f"got shape {arr.shape}"
        )
    return arr.transpose(0, 2, 3, 1)


@fill_doc
def atom_grid(
    atoms: Any,
    image_shape: Sequence[int],
    path: str | os.PathLike,
    *,
    n_cols: int | None = None,
    title: str | None = None,
    symmetric: bool = True,
) -> Path:
    """Tile dictionary atoms as images, each scaled on its own.

    Parameters
    ----------
    atoms : array_like, shape (n_atoms, n_features)
        One atom per row (i.e. ``W.T``); ``n_features = prod(image_shape)``.
    image_shape : sequence of int
        ``(h, w)`` (grey) or ``(h, w, 3)`` (colour).
    {png_path}
    n_cols : int or None
        Columns of the grid (default ``ceil(sqrt(n_atoms))``: 256 atoms -> 16 × 16).
    title : str or None
        Title above the grid.
    symmetric : bool
        Scale each tile by its largest magnitude so grey is 0, black the most negative and
        white the most positive value (default); otherwise min-max.

    {returns_png}
    """
    shape = check_image_shape(image_shape)
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise ValueError(f"image_shape must have 1 or 3 channels, got {shape}")
    imgs = atoms_as_images(atoms, shape)
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    return _write_mosaic(_scale_tiles(imgs, symmetric), n_cols, title, path)


@fill_doc
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

    Parameters
    ----------
    encoder, decoder : array_like, shape (n_filters, C, kh, kw)
        ``C`` = 1 or 3; the two banks may differ in size.
    {png_path}
    titles : pair of str
        Panel titles.
    n_cols : int or None
        Columns of each grid (default ``ceil(sqrt(n_filters))``).
    title : str or None
        Title above both panels.
    symmetric : bool
        Tile scaling as in :func:`atom_grid`.

    {returns_png}
    """
    enc = _filter_bank(encoder, "encoder")
    dec = _filter_bank(decoder, "decoder")
    if not (isinstance(titles, (tuple, list)) and len(titles) == 2):
        raise ValueError(f"titles must be a pair of strings, got {titles!r}")
    cols = check_n_cols(n_cols)
    mosaics = [_mosaic(_scale_tiles(b, symmetric), cols) for b in (enc, dec)]
    sizes = [_inches(m, tile=enc.shape[1]) for m in mosaics]
    fig = new_figure(sizes[0][0] + sizes[1][0] + 0.5, max(s[1] for s in sizes) + 0.3)
    for i, (m, t) in enumerate(zip(mosaics, titles, strict=True)):
        _show_mosaic(fig.add_subplot(1, 2, i + 1), m, str(t))
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


@fill_doc
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

    Unlike :func:`atom_grid`, all tiles share one scale so they can be compared.

    Parameters
    ----------
    images : array_like, shape (n, h, w), (n, h, w, 3) or (n, n_features)
        The last form needs ``image_shape``.
    {png_path}
    image_shape : sequence of int or None
        ``(h, w)`` or ``(h, w, 3)`` for flat rows.
    n_cols : int or None
        Columns of the grid (default ``ceil(sqrt(n))``).
    title : str or None
        Title above the grid.
    value_range : (float, float) or None
        ``(low, high)`` mapped to black/white (default: the data's min and max).

    {returns_png}
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
    return _write_mosaic(scaled, n_cols, title, path)
