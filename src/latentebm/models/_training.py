"""The mini-batch training loop shared by every model's ``fit``: deterministic epoch order from a
seed, a resumable ``(epoch, batch)`` position, a tqdm bar, Ctrl-C that finishes the step in flight
and saves, and checkpoint saves every ``checkpoint_every`` steps and at the end.

The models keep their maths; a ``fit`` reads::

    loop = MinibatchLoop(n, batch_size, epochs, seed=..., device=..., start=(epoch, batch),
                         checkpoint=path, save=partial(self._save, path, ...),
                         checkpoint_every=..., desc=..., progress=...)
    with loop:
        for epoch in loop.epochs():
            stats = ...open(history, epoch.index, resumed=epoch.resumed)
            for b in epoch:
                ... one step on Y[b.idx] ...
                loop.step_done(b, n_steps, postfix={...}, callback=callback,
                               callback_args=(n_steps, self))
            stats.close()
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from tqdm.auto import tqdm

from ._interrupt import GracefulInterrupt


def epoch_order(seed: int, n: int, epoch: int, device: torch.device | str) -> torch.Tensor:
    """The permutation of ``n`` samples for ``epoch``, ``(n,)`` long on ``device``; drawn on the
    CPU from ``seed * 1_000_003 + epoch`` so that it is the same on every device and run."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def resuming(resume: bool, checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``fit`` continues from ``checkpoint``: asked to, and the file exists."""
    return bool(resume) and checkpoint is not None and os.path.exists(checkpoint)


@dataclass(frozen=True)
class Batch:
    """One mini-batch: ``idx`` ``(≤ batch_size,)`` indexes the samples; ``step`` is the position
    in the whole run, ``epoch * steps_per_epoch + batch`` (for learning-rate schedules)."""

    epoch: int
    batch: int
    step: int
    idx: torch.Tensor


@dataclass(frozen=True)
class Epoch:
    """One epoch of a :class:`MinibatchLoop`; iterating gives its remaining :class:`Batch` es.
    ``first > 0`` (``resumed``) when a run restarts in the middle of this epoch."""

    index: int
    first: int
    order: torch.Tensor
    batch_size: int
    steps_per_epoch: int

    @property
    def resumed(self) -> bool:
        return self.first > 0

    def __iter__(self) -> Iterator[Batch]:
        size = self.batch_size
        for batch in range(self.first, self.steps_per_epoch):
            idx = self.order[batch * size : (batch + 1) * size]
            yield Batch(self.index, batch, self.index * self.steps_per_epoch + batch, idx)


class MinibatchLoop:
    """Epochs of shuffled mini-batches of ``n`` samples, from the position ``start``.

    ``save(epoch, batch)`` writes the checkpoint with the position it is given. It is called,
    unless ``checkpoint`` (the path) is ``None``, when the step count reaches a multiple of
    ``checkpoint_every``, on Ctrl-C or ``KeyboardInterrupt`` (which then propagates) and when
    the block ends.
    ``batch_size`` must already be clipped to ``n``. Use as a context manager around
    :meth:`epochs`, and call :meth:`step_done` after every step.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        epochs: int,
        *,
        seed: int,
        device: torch.device | str,
        start: tuple[int, int] = (0, 0),
        checkpoint: str | os.PathLike | None = None,
        save: Callable[[int, int], None] | None = None,
        checkpoint_every: int = 100,
        desc: str = "training",
        progress: bool = True,
    ) -> None:
        self.n, self.batch_size, self.n_epochs = n, batch_size, epochs
        self.seed, self.device = seed, device
        self.steps_per_epoch = math.ceil(n / batch_size)
        self.total = epochs * self.steps_per_epoch
        self.start = start
        self.position = start
        self._save = None if checkpoint is None else save
        self.checkpoint_every = checkpoint_every
        self._desc, self._progress = desc, progress
        self._interrupt = GracefulInterrupt()
        self._bar: tqdm | None = None

    def __enter__(self) -> MinibatchLoop:
        start_epoch, start_batch = self.start
        self._bar = tqdm(total=self.total,
                         initial=start_epoch * self.steps_per_epoch + start_batch,
                         disable=not self._progress, desc=self._desc, unit="batch", leave=False)
        self._interrupt.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._interrupt.__exit__(None, None, None)
            self._bar.close()
            self.save()
        elif issubclass(exc_type, KeyboardInterrupt):
            try:
                self.save()
                self._bar.close()
            finally:
                self._interrupt.__exit__(exc_type, exc, tb)
        else:
            self._interrupt.__exit__(exc_type, exc, tb)

    def epochs(self) -> Iterator[Epoch]:
        """The remaining epochs, each with its seeded sample order (see :func:`epoch_order`)."""
        start_epoch, start_batch = self.start
        for epoch in range(start_epoch, self.n_epochs):
            order = epoch_order(self.seed, self.n, epoch, self.device)
            first = start_batch if epoch == start_epoch else 0
            yield Epoch(epoch, first, order, self.batch_size, self.steps_per_epoch)

    def step_done(self, batch: Batch, count: int, *, postfix: dict[str, str] | None = None,
                  callback: Callable[..., object] | None = None,
                  callback_args: tuple[Any, ...] = ()) -> None:
        """After a step: move the position past ``batch``, advance the bar (with ``postfix``),
        call ``callback(*callback_args)``, save if ``count`` (the model's step counter) is a
        multiple of ``checkpoint_every``, and raise ``KeyboardInterrupt`` if Ctrl-C was pressed."""
        last = batch.batch + 1 == self.steps_per_epoch
        self.position = (batch.epoch + 1, 0) if last else (batch.epoch, batch.batch + 1)
        self._bar.update(1)
        if postfix is not None:
            self._bar.set_postfix(**postfix)
        if callback is not None:
            callback(*callback_args)
        if count % self.checkpoint_every == 0:
            self.save()
        self._interrupt.raise_if_requested()

    def save(self) -> None:
        """Checkpoint the current position (nothing without a checkpoint path)."""
        if self._save is not None:
            self._save(*self.position)


__all__ = ["Batch", "Epoch", "MinibatchLoop", "epoch_order", "resuming"]
