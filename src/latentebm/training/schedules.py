"""Learning-rate schedules as ``torch.optim.lr_scheduler`` objects (their state goes into the
checkpoint with the optimizer's, so a resumed run continues the schedule exactly)."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR


def cosine_factor(step: int, total: int, final_fraction: float) -> float:
    """``f + (1 − f)·½(1 + cos(π·step/total))``: 1 at step 0, ``f`` at ``total``.

    Parameters
    ----------
    step : int
        Scheduler step.
    total : int
        Steps over which the factor decays (at least 1 is used).
    final_fraction : float
        ``f``, the factor at ``total``.

    Returns
    -------
    float
    """
    frac = 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    return final_fraction + (1 - final_fraction) * frac


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, final_fraction: float = 0.0
) -> LambdaLR:
    """Cosine decay of every group's learning rate from its initial value to
    ``final_fraction`` of it over ``total_steps`` scheduler steps (one per training step).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Its groups' ``lr`` at construction are the starting rates.
    total_steps : int
        Steps over which the rate decays (``epochs × steps_per_epoch``).
    final_fraction : float
        The rate at the end, as a fraction of the starting one (0 decays to zero).
    """
    return LambdaLR(optimizer, partial(cosine_factor, total=int(total_steps),
                                       final_fraction=float(final_fraction)))


def constant_schedule(optimizer: torch.optim.Optimizer) -> LambdaLR:
    """The learning rate kept at its initial value (a schedule object all the same, so every
    model's checkpoint has the same shape).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer to schedule.

    Returns
    -------
    torch.optim.lr_scheduler.LambdaLR
    """
    return LambdaLR(optimizer, _one)


def _one(step: int) -> float:
    return 1.0


__all__ = ["constant_schedule", "cosine_factor", "cosine_schedule"]
