"""Figures from arrays, each written as a PNG atomically and its path returned.

:mod:`~latentebm.viz.grids` tiles atoms, filter banks and images; :mod:`~latentebm.viz.plots`
draws convergence curves and Gabor orientation/frequency plots; :mod:`~latentebm.viz.vae`
draws the VAE's posteriors, samples, interpolations and manifold. All share one figure helper
(:mod:`~latentebm.viz._figure`): a private Agg canvas, no pyplot state, nothing shown.
"""

from . import vae
from .grids import atom_grid, filter_bank_pair, image_grid
from .plots import convergence_curves, orientation_frequency

__all__ = [
    "atom_grid",
    "convergence_curves",
    "filter_bank_pair",
    "image_grid",
    "orientation_frequency",
    "vae",
]
