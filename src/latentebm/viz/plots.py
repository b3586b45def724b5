"""Line and polar plots: convergence curves and how fitted Gabors tile orientation and
frequency. Same conventions as :mod:`latentebm.viz.grids`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._docs import fill_doc
from ..metrics.atoms import as_float_array
from ._figure import new_figure, save_png

__all__ = ["convergence_curves", "orientation_frequency"]


@fill_doc
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
    """One line per entry of ``curves``.

    Parameters
    ----------
    curves : mapping of str to (array_like, array_like)
        ``{label: (x, y)}``, ``x`` and ``y`` 1-D of equal length ``(n_points,)``.
    {png_path}
    xlabel, ylabel : str
        Axis labels.
    logy, logx : bool
        Logarithmic axes. Points with ``y <= 0`` (e.g. a gap that reached exactly 0), or
        ``x <= 0`` with ``logx``, are not drawn; a curve with no such point left is an error.
    {plot_title}

    {returns_png}
    """
    if not isinstance(curves, Mapping) or len(curves) == 0:
        raise ValueError("curves must be a non-empty mapping {label: (x, y)}")
    fig = new_figure(6.4, 4.4)
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
    return save_png(fig, path)


@fill_doc
def orientation_frequency(
    orientations_rad: Any,
    frequencies: Any,
    path: str | os.PathLike,
    *,
    r2: Any = None,
    title: str | None = None,
) -> Path:
    """How fitted Gabors tile orientation and spatial frequency (polar plot + rose histogram).

    Left: each atom is a point at angle = orientation (plotted at θ and θ + π since orientation
    is axial) and radius = frequency, coloured by ``r2`` when given. Right: a histogram of
    orientations over [0, π), mirrored. Use the ``theta``/``frequency``/``r2`` of
    :func:`latentebm.metrics.fit_gabors` (filter out bad fits first: NaN is rejected).

    Parameters
    ----------
    orientations_rad : array_like, shape (n_atoms,)
        Orientations in radians.
    frequencies : array_like, shape (n_atoms,)
        Spatial frequencies in cycles/pixel, >= 0.
    {png_path}
    r2 : array_like, shape (n_atoms,), optional
        Goodness of fit, used as colour.
    title : str or None
        Title above both panels.

    {returns_png}
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
    fig = new_figure(10.0, 4.8)
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
    hx.set_title(f"orientations (n = {th.size})", pad=14)
    ax.set_title("orientation vs frequency (cycles/px)", pad=14)
    if title:
        fig.suptitle(title)
        fig.subplots_adjust(top=0.8)  # the panels' titles below the figure's
    return save_png(fig, path)
