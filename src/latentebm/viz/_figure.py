"""The one figure helper: a private Agg ``Figure`` (no pyplot state, nothing shown) and an
atomic PNG write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._io import atomic_path

DPI = 100


def new_figure(width_in: float, height_in: float, *, layout: str | None = None) -> Figure:
    """A figure of at least 1 × 1 inch on its own Agg canvas.

    Parameters
    ----------
    width_in, height_in : float
        Size in inches (raised to 1 if smaller).
    layout : str or None
        matplotlib's layout engine, e.g. ``"constrained"``.
    """
    fig = Figure(figsize=(max(width_in, 1.0), max(height_in, 1.0)), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (the umask decides its mode); returns it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to write.
    path : str or os.PathLike
        A file name; its folder is created if missing. A folder is an error.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a directory; give a file name ending in .png")
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def check_n_cols(n_cols: Any) -> int | None:
    """``None`` or a positive integer number of columns."""
    if n_cols is None:
        return None
    if isinstance(n_cols, bool) or not isinstance(n_cols, (int, np.integer)) or n_cols < 1:
        raise ValueError(f"n_cols must be a positive integer or None, got {n_cols!r}")
    return int(n_cols)
