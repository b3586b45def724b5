"""Early stopping on a held-out score: keep the best weights, stop after ``patience`` epochs.

The record is the training history itself (one score per epoch), so a resumed run knows how
many epochs have passed since the best one without any extra state; only the best weights are
saved beside the checkpoint's model state.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EarlyStopping:
    """Best-so-far weights of ``module`` by a held-out score (lower is better).

    Parameters
    ----------
    module : torch.nn.Module
        The module whose parameters and buffers are kept.
    patience : int or None
        Stop after this many epochs without a new best; ``None``: never stop early (the best
        weights are still kept and restored).
    scores : sequence of float, default=()
        Scores of the epochs already done (a resumed run's history), oldest first.
    best_state : dict of str to torch.Tensor or None, default=None
        The weights of the best of those epochs (from the checkpoint); required when
        ``scores`` is not empty.
    """

    def __init__(self, module: nn.Module, patience: int | None, scores: tuple[float, ...] = (),
                 best_state: dict[str, torch.Tensor] | None = None) -> None:
        self.module = module
        self.patience = patience
        self.best_score = math.inf
        self.best_epoch = -1
        self.epochs_seen = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        for score in scores:
            self._record(score)
        if self.best_epoch >= 0:
            if best_state is None:
                raise ValueError("resuming early stopping needs the best weights")
            self.best_state = {k: v.detach().clone() for k, v in best_state.items()}

    def _record(self, score: float) -> bool:
        improved = score < self.best_score
        if improved:
            self.best_score, self.best_epoch = score, self.epochs_seen
        self.epochs_seen += 1
        return improved

    def update(self, score: float) -> None:
        """Record one epoch's held-out ``score``; keep the weights if it is the best yet.

        Parameters
        ----------
        score : float
            The epoch's held-out score (NaN never counts as an improvement).
        """
        if self._record(score):
            self.best_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()
                               if isinstance(v, torch.Tensor)}

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed since the best one."""
        return (self.patience is not None and self.best_epoch >= 0
                and self.epochs_seen - 1 - self.best_epoch >= self.patience)

    def restore(self) -> None:
        """Load the best weights into the module (nothing happens before the first score)."""
        if self.best_state is not None:
            own = self.module.state_dict()
            own.update(self.best_state)
            self.module.load_state_dict(own)


__all__ = ["EarlyStopping"]
