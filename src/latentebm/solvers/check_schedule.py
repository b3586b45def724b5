"""When a solver's next certificate check is due, from how fast the gaps fall.

A check costs several iterations on convolutional problems (B3's ADMM: about 35 ms against
11.8 ms per iteration: a decode for the energy, the dual points and an adjoint for the
pixelwise rescaling), and at a fixed spacing of 10 iterations the self-stopped run spent a
fifth of its time on checks that could not have stopped it. The relative gaps fall roughly
geometrically, so after two checks each sample's crossing of ``tol`` can be predicted:
``n = Δk · log(tol / g) / log(g / g_prev)``. Each sample's next check comes after its own
``n`` (so that its codes never depend on the other samples of the batch), rounded up to a
multiple of the fixed spacing (the solver records its dual extrapolation's history at that
fixed spacing between checks), at most twice the previous spacing and a quarter of the
iterations run so far: where the decay stalls, a sample stops at most a quarter (plus one
spacing) later than at the fixed spacing. Where a sample's gap did not fall, its spacing is
the fixed one.

The quarter was chosen by replaying the rule on gap traces of B3's image at tolerances 1e-3
to 1e-6 (``benchmarks/results/check_schedule.md``): with circular boundaries (smooth decay)
half the run did best, 2.73 s to 1e-4 against 2.84 s for a quarter and 3.18 s at the fixed
spacing; with the ``"full"`` boundary (masked ADMM, whose gap stalls between 4e-4 and 1.6e-4
for 200 iterations) half overshot to 560 iterations (17.0 s) where a quarter stopped at 480
(14.9 s) and the fixed spacing at 460 (16.3 s).
"""

from __future__ import annotations

import numpy as np


class CheckSchedule:
    """The iterations at which a batched solver evaluates each sample's certificate.

    Parameters
    ----------
    batch : int
        Rows of the batch (samples).
    tol : float
        The relative-gap tolerance the samples stop at.
    every : int
        The first check, the shortest spacing and the unit of every spacing.
    max_iter : int
        The last iteration, always checked.

    Attributes
    ----------
    rows : numpy.ndarray of shape (n_working,)
        The rows still being solved, in the solver's working order.
    """

    def __init__(self, batch: int, tol: float, every: int, max_iter: int) -> None:
        self.tol, self.every, self.max_iter = float(tol), int(every), int(max_iter)
        self.rows = np.arange(batch)
        self.previous = np.full(batch, np.nan)
        self.last_check = np.zeros(batch, dtype=np.int64)
        self.step = np.full(batch, self.every, dtype=np.int64)
        self.next_check = np.full(batch, min(self.every, self.max_iter), dtype=np.int64)

    def due(self, k: int) -> np.ndarray:
        """Which working rows are checked at iteration ``k``: bool, shape (n_working,)."""
        return self.next_check[self.rows] <= k

    def advance(self, k: int, due: np.ndarray, relative_gap: np.ndarray) -> None:
        """Schedule the next check of the rows just checked.

        Parameters
        ----------
        k : int
            This check's iteration.
        due : numpy.ndarray of shape (n_working,), bool
            The rows checked (:meth:`due`).
        relative_gap : numpy.ndarray of shape (n_due,)
            Their ``gap / energy``.
        """
        rows = self.rows[due]
        gap = np.asarray(relative_gap, dtype=np.float64)
        before = self.previous[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = (k - self.last_check[rows]) * np.log(self.tol / gap) / np.log(gap / before)
        predicted = (gap < before) & (gap > self.tol) & np.isfinite(steps) & (steps > 0)
        longest = np.maximum(self.every, np.minimum(2 * self.step[rows], k // 4))
        steps = np.where(predicted, np.minimum(np.ceil(np.where(predicted, steps, 1)), longest),
                         self.every)
        steps = self.every * np.ceil(steps / self.every).astype(np.int64)
        self.previous[rows] = gap
        self.last_check[rows] = k
        self.step[rows] = steps
        self.next_check[rows] = np.minimum(k + steps, self.max_iter)

    def keep(self, mask: np.ndarray) -> None:
        """Keep the working rows ``mask`` (bool, shape (n_working,)) selects."""
        self.rows = self.rows[mask]


__all__ = ["CheckSchedule"]
