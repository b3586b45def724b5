"""Figures for the VAE: posterior "fuzzy balls", samples, reconstructions, interpolations,
the decoded 2-D manifold and training curves.

Same conventions as :mod:`latentebm.viz.grids`: NumPy in (tensors are copied to the CPU), checked
arguments, a private Agg figure, an atomic PNG write, the path returned.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.collections import EllipseCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from .._docs import fill_doc
from .._validation import as_tensor
from ..metrics.atoms import as_float_array
from ._figure import new_figure, save_png
from .grids import image_grid

__all__ = [
    "posterior_ellipses",
    "posterior_panels",
    "reconstruction_pairs",
    "interpolation_strip",
    "latent_manifold",
    "training_curves",
    "sample_grid",
]

_COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def _curve_array(x: Any, name: str) -> np.ndarray:
    """A 1-D float64 array that may hold NaN (skipped when drawn)."""
    return as_tensor(x, name, ndim=1, dtype=torch.float64, finite=False).cpu().numpy()


def _posterior_args(mu: Any, sigma: Any, labels: Any) -> tuple[np.ndarray, ...]:
    mu_a = as_float_array(mu, "mu", ndim=2)
    sigma_a = as_float_array(sigma, "sigma", ndim=2)
    if mu_a.shape[1] != 2:
        raise ValueError(f"mu must be (n, 2): ellipses need a 2-D latent, got shape {mu_a.shape}")
    if sigma_a.shape != mu_a.shape:
        raise ValueError(f"sigma must have mu's shape {mu_a.shape}, got {sigma_a.shape}")
    if (sigma_a < 0).any():
        raise ValueError("sigma must be non-negative (standard deviations, not log-variances)")
    lab = np.asarray(labels)
    if lab.shape != (mu_a.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({mu_a.shape[0]},), got {lab.shape}")
    return mu_a, sigma_a, lab


def _draw_balls(ax: Any, mu: np.ndarray, sigma: np.ndarray, labels: np.ndarray, title: str) -> None:
    """Ellipses centred at μ with half-axes σ, one colour per class, and the prior's unit
    circle; the view covers every ellipse and the circle, with equal axes."""
    colors = np.array([_COLORS[int(c) % len(_COLORS)] for c in labels])
    balls = EllipseCollection(
        2 * sigma[:, 0],
        2 * sigma[:, 1],
        np.zeros(len(mu)),
        units="xy",
        offsets=mu,
        offset_transform=ax.transData,
        facecolors=colors,
        edgecolors=colors,
        alpha=0.18,
        linewidths=0.6,
    )
    ax.add_collection(balls)
    ax.scatter(mu[:, 0], mu[:, 1], s=2, c=colors, linewidths=0)
    ax.add_patch(Circle((0, 0), 1.0, fill=False, linestyle="--", color="black", linewidth=1.2))
    reach = float(np.max(np.abs(mu) + sigma)) if len(mu) else 1.0
    lim = 1.08 * max(reach, 1.25)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", linewidth=0.5, zorder=0)
    ax.axvline(0, color="0.85", linewidth=0.5, zorder=0)
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_title(title, fontsize=10)


def _class_legend(fig: Any, labels: np.ndarray) -> None:
    classes = sorted(set(int(c) for c in labels))
    handles = [
        Line2D([], [], marker="o", linestyle="", color=_COLORS[c % len(_COLORS)], label=str(c))
        for c in classes
    ]
    handles.append(Line2D([], [], linestyle="--", color="black", label="prior, |z| = 1"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=len(handles) if fig.get_figwidth() >= 8 else 6,
        fontsize=8,
        frameon=False,
    )


@fill_doc
def posterior_ellipses(
    mu: Any, sigma: Any, labels: Any, path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """The posteriors ``N(μ, diag σ²)`` of a 2-D VAE as ellipses coloured by class.

    The dashed circle is the prior's unit circle.

    Parameters
    ----------
    mu, sigma : array_like, shape (n, 2)
        Posterior means and standard deviations (not log-variances).
    labels : array_like of int, shape (n,)
        Classes, one colour each.
    {png_path}
    {plot_title}

    {returns_png}
    """
    mu_a, sigma_a, lab = _posterior_args(mu, sigma, labels)
    fig = new_figure(6.0, 6.6, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    _draw_balls(ax, mu_a, sigma_a, lab, title or "posterior q(z|x): centre μ, half-axes σ")
    _class_legend(fig, lab)
    return save_png(fig, path)


@fill_doc
def posterior_panels(
    panels: Mapping[str, tuple[Any, Any]],
    labels: Any,
    path: str | os.PathLike,
    *,
    n_cols: int | None = None,
    suptitle: str | None = None,
) -> Path:
    """Several posterior-ellipse plots side by side, each on its own scale.

    Parameters
    ----------
    panels : mapping of str to (array_like, array_like)
        ``{title: (mu, sigma)}``, each ``(n, 2)`` as in :func:`posterior_ellipses`.
    labels : array_like of int, shape (n,)
        Classes shared by every panel.
    {png_path}
    n_cols : int or None
        Panels per row (default ``min(n_panels, 3)``).
    suptitle : str or None
        Title above all panels.

    {returns_png}
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError("panels must be a non-empty mapping {title: (mu, sigma)}")
    checked = {t: _posterior_args(m, s, labels) for t, (m, s) in panels.items()}
    n = len(checked)
    cols = n_cols or min(n, 3)
    rows = math.ceil(n / cols)
    fig = new_figure(4.2 * cols, 4.4 * rows + 0.8, layout="constrained")
    lab = np.asarray(labels)
    for i, (title, (mu_a, sigma_a, _)) in enumerate(checked.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw_balls(ax, mu_a, sigma_a, lab, title)
    if suptitle:
        fig.suptitle(suptitle)
    _class_legend(fig, lab)
    return save_png(fig, path)


def _images(x: Any, name: str, image_shape: Sequence[int]) -> np.ndarray:
    arr = as_float_array(x, name)
    h, w = (int(s) for s in image_shape)
    if arr.size == 0 or arr.size % (h * w):
        raise ValueError(f"{name} cannot be read as images of shape {(h, w)}: shape {arr.shape}")
    return arr.reshape(-1, h, w)


@fill_doc
def sample_grid(
    samples: Any,
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] = (28, 28),
    title: str = "samples: decoded means of z ~ N(0, I)",
) -> Path:
    """Samples tiled on the common [0, 1] scale.

    Parameters
    ----------
    samples : array_like, shape (n, h * w) or (n, h, w)
        Decoded samples in [0, 1].
    {png_path}
    image_shape : (int, int)
        ``(h, w)``.
    title : str
        Title above the grid.

    {returns_png}
    """
    imgs = _images(samples, "samples", image_shape)
    return image_grid(imgs, path, title=title, value_range=(0.0, 1.0))


@fill_doc
def reconstruction_pairs(
    x: Any,
    recon: Any,
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] = (28, 28),
    n_cols: int = 10,
) -> Path:
    """Rows of test images, each followed by a row of their reconstructions (same scale).

    Parameters
    ----------
    x, recon : array_like, shape (n, h * w) or (n, h, w)
        Images and their reconstructions in [0, 1].
    {png_path}
    image_shape : (int, int)
        ``(h, w)``.
    n_cols : int
        Images per row.

    {returns_png}
    """
    a = _images(x, "x", image_shape)
    b = _images(recon, "recon", image_shape)
    if a.shape != b.shape:
        raise ValueError(f"x and recon must hold the same number of images, got {len(a)}, {len(b)}")
    rows = []
    for start in range(0, len(a), n_cols):
        rows += [a[start : start + n_cols], b[start : start + n_cols]]
    tiles = np.concatenate(rows)
    return image_grid(
        tiles,
        path,
        n_cols=n_cols,
        value_range=(0.0, 1.0),
        title="test digits (odd rows) and their reconstructions (even rows)",
    )


@fill_doc
def interpolation_strip(
    images: Any,
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] = (28, 28),
    n_cols: int | None = None,
    title: str = "interpolation between the codes of two test digits",
) -> Path:
    """Decoded points along a line in code space; one strip per row of ``n_cols`` images.

    Parameters
    ----------
    images : array_like, shape (n, h * w) or (n, h, w)
        Decoded images in [0, 1], in path order.
    {png_path}
    image_shape : (int, int)
        ``(h, w)``.
    n_cols : int or None
        Images per strip (default: all in one).
    title : str
        Title above the strip.

    {returns_png}
    """
    imgs = _images(images, "images", image_shape)
    return image_grid(imgs, path, n_cols=n_cols or len(imgs), title=title, value_range=(0.0, 1.0))


@fill_doc
def latent_manifold(
    images: Any, grid: Any, path: str | os.PathLike, *, image_shape: Sequence[int] = (28, 28)
) -> Path:
    """The decoder over a square grid of 2-D codes.

    Parameters
    ----------
    images : array_like, shape (m * m, h * w) or (m * m, h, w)
        Decoded images in row-major order of ``(z₂ descending, z₁)``.
    grid : array_like, shape (m,)
        The coordinate values per axis.
    {png_path}
    image_shape : (int, int)
        ``(h, w)``.

    {returns_png}
    """
    g = as_float_array(grid, "grid", ndim=1)
    m = g.size
    imgs = _images(images, "images", image_shape)
    if len(imgs) != m * m:
        raise ValueError(f"images must hold len(grid)² = {m * m} images, got {len(imgs)}")
    h, w = imgs.shape[1:]
    canvas = imgs.reshape(m, m, h, w).transpose(0, 2, 1, 3).reshape(m * h, m * w)
    fig = new_figure(7.0, 7.0)
    ax = fig.add_axes((0.1, 0.08, 0.86, 0.86))
    step = (g[-1] - g[0]) / max(m - 1, 1)
    extent = (g[0] - step / 2, g[-1] + step / 2, g[0] - step / 2, g[-1] + step / 2)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    ax.set_xlabel("z₁")
    ax.set_ylabel("z₂")
    ax.set_title("decoded means over a grid of 2-D codes")
    return save_png(fig, path)


@fill_doc
def training_curves(
    curves: Mapping[str, tuple[Any, Any]],
    path: str | os.PathLike,
    *,
    xlabel: str = "epoch",
    ylabel: str = "nats per image",
    title: str | None = None,
    logy: bool = False,
) -> Path:
    """Training curves, one line per entry (NaN points skipped).

    Parameters
    ----------
    curves : mapping of str to (array_like, array_like)
        ``{label: (x, y)}``, 1-D of equal length ``(n_points,)``; NaN marks a missing point.
    {png_path}
    xlabel, ylabel : str
        Axis labels.
    {plot_title}
    logy : bool
        Logarithmic y axis (points with ``y <= 0`` skipped).

    {returns_png}
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty mapping {label: (x, y)}")
    fig = new_figure(7.4, 4.4, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for label, (xs, ys) in curves.items():
        x = _curve_array(xs, f"curves[{label!r}] x")
        y = _curve_array(ys, f"curves[{label!r}] y")
        if x.shape != y.shape:
            raise ValueError(f"curves[{label!r}]: x and y differ in length")
        keep = np.isfinite(x) & np.isfinite(y)
        if logy:
            keep &= y > 0
        ax.plot(x[keep], y[keep], marker="o", markersize=3, label=str(label))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    if title:
        ax.set_title(title)
    return save_png(fig, path)
