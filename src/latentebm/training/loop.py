"""The mini-batch training loop shared by every model's ``fit``: deterministic epoch order from a
seed, a resumable ``(epoch, batch)`` position, a tqdm bar, Ctrl-C that finishes the step in flight
and saves, and checkpoint saves every ``checkpoint_every`` steps and at the end. Inside the loop
denormal floats are flushed to zero (:mod:`latentebm.training.denormals`): saturated units
otherwise make the CPU crawl through 1e-40-sized gradients.

The models keep their maths; a ``fit`` reads::

    loop = MinibatchLoop(n, batch_size, epochs, seed=..., device=..., start=(epoch, batch),
                         checkpoint=path, save=partial(self._save, path, ...),
                         checkpoint_every=..., watch=self, callback=callback, desc=...,
                         progress=...)
    with loop:
        for epoch in loop.epochs():
            stats = ...open(history, epoch.index, resumed=epoch.resumed)
            for b in epoch:
                ... one step on Y[b.idx] ...
                loop.step_done(b, n_steps, postfix={...})  # callback(n_steps, self)
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

from .._validation import check_int
from .denormals import denormals_flushed
from .interrupt import GracefulInterrupt, ImmediateInterrupt


def epoch_order(seed: int, n: int, epoch: int, device: torch.device | str) -> torch.Tensor:
    """The permutation of ``n`` samples for ``epoch``, drawn on the CPU from
    ``seed * 1_000_003 + epoch`` so that it is the same on every device and run.

    Parameters
    ----------
    seed : int
        The run's seed.
    n : int
        Number of samples.
    epoch : int
        Epoch index, 0-based.
    device : torch.device or str
        Where the permutation is put.

    Returns
    -------
    torch.Tensor of shape (n,), long
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def resuming(resume: bool, checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``fit`` continues from ``checkpoint``: asked to, and the file exists.

    Parameters
    ----------
    resume : bool
        Whether the caller asked to resume.
    checkpoint : str, os.PathLike or None
        The checkpoint path.

    Returns
    -------
    bool
    """
    return bool(resume) and checkpoint is not None and os.path.exists(checkpoint)


def check_loop_args(n: int, epochs: Any, batch_size: Any, checkpoint_every: Any
                    ) -> tuple[int, int, int]:
    """The :class:`MinibatchLoop` arguments of a ``fit``, each checked to be an integer ≥ 1.

    Parameters
    ----------
    n : int
        Number of training samples.
    epochs, batch_size, checkpoint_every : int
        As given to ``fit``.

    Returns
    -------
    epochs : int
    batch_size : int
        Clipped to ``n``.
    checkpoint_every : int
    """
    return (check_int(epochs, "epochs", low=1),
            min(check_int(batch_size, "batch_size", low=1), n),
            check_int(checkpoint_every, "checkpoint_every", low=1))


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

    Divergence: :meth:`step_done` takes the step's ``loss`` and flags a non-finite one on the
    device (no host synchronisation); every ``check_every`` steps, before every save and at the
    end, the flag, the ``watch`` module's tensors and the ``optimizer``'s state are checked. A
    NaN or inf stops training with ``FloatingPointError`` naming the step (epoch, batch) and the
    last good checkpoint, which is left as it was. ``scheduler`` (a
    ``torch.optim.lr_scheduler``) is stepped after every step.

    Use as a context manager around :meth:`epochs`, and call :meth:`step_done` after every step.

    Parameters
    ----------
    n : int
        Number of training samples.
    batch_size : int
        Mini-batch size, already clipped to ``n``.
    epochs : int
        Total number of epochs of the run (including those already done before ``start``).
    seed : int
        Seed of the epoch orders (:func:`epoch_order`).
    device : torch.device or str
        Device of the sample orders and of the divergence flag.
    start : tuple of int, default=(0, 0)
        ``(epoch, batch)`` position to start from (a resumed run's).
    checkpoint : str, os.PathLike or None, default=None
        Checkpoint path; ``None`` disables saving.
    save : callable or None, default=None
        ``save(epoch, batch)``, writes the checkpoint at that position.
    checkpoint_every : int, default=100
        Save when the model's step counter is a multiple of this.
    check_every : int, default=50
        Check for divergence every this many steps.
    watch : torch.nn.Module or None, default=None
        Module whose ``state_dict`` tensors are checked for NaN/inf.
    optimizer : torch.optim.Optimizer or None, default=None
        Optimizer whose state is checked for NaN/inf.
    scheduler : torch.optim.lr_scheduler.LRScheduler or None, default=None
        Stepped after every step.
    callback : callable or None, default=None
        The ``fit``'s callback, called after every step by :meth:`step_done`.
    desc : str, default="training"
        Label of the progress bar.
    progress : bool, default=True
        Show a tqdm progress bar.
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
        check_every: int = 50,
        watch: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        callback: Callable[..., object] | None = None,
        desc: str = "training",
        progress: bool = True,
    ) -> None:
        self.n, self.batch_size, self.n_epochs = n, batch_size, epochs
        self.seed, self.device = seed, device
        self.steps_per_epoch = math.ceil(n / batch_size)
        self.total = epochs * self.steps_per_epoch
        self.start = start
        self.position = start
        self.checkpoint = checkpoint
        self._save = None if checkpoint is None else save
        self.checkpoint_every = checkpoint_every
        self.check_every = check_every
        self.watch, self.optimizer, self.scheduler = watch, optimizer, scheduler
        self.callback = callback
        self._desc, self._progress = desc, progress
        self._interrupt = GracefulInterrupt()
        self._bar: tqdm | None = None
        first = start[0] * self.steps_per_epoch + start[1]
        if first > self.total:  # a resumed run that already went further than asked
            raise ValueError(
                f"the checkpoint {checkpoint} has trained {start[0]} epoch(s)"
                + (f" and {start[1]} batch(es)" if start[1] else "")
                + f", more than the {epochs} epoch(s) asked for: resume with epochs of at "
                f"least {start[0] + (start[1] > 0)}, or load() the model it holds")
        # the first step whose loss was not finite (-1: none), kept on the device
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self._checked = first  # steps before this one are known to be finite
        self._steps_run = first
        self._save_at_epoch_end = False  # a save due on an epoch's last step waits for its close
        self.last_good: str | None = (
            str(checkpoint) if checkpoint is not None and os.path.exists(checkpoint) and first
            else None
        )

    def __enter__(self) -> MinibatchLoop:
        self._denormals = denormals_flushed()
        self._denormals.__enter__()
        start_epoch, start_batch = self.start
        self._bar = tqdm(total=self.total,
                         initial=start_epoch * self.steps_per_epoch + start_batch,
                         disable=not self._progress, desc=self._desc, unit="batch", leave=False)
        self._interrupt.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._finish(exc_type, exc, tb)
        finally:
            self._denormals.__exit__(exc_type, exc, tb)

    def _finish(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                tb: TracebackType | None) -> None:
        if exc_type is None:
            self._interrupt.__exit__(None, None, None)
            self._bar.close()
            self.save()
            # Ctrl-C after the last step (during a final validation, say) is still honoured,
            # now that the finished state is saved
            self._interrupt.raise_if_requested(force=True)
        elif issubclass(exc_type, KeyboardInterrupt):
            try:
                if not issubclass(exc_type, ImmediateInterrupt):  # else a step may be half done
                    self.save()
                self._bar.close()
            finally:
                self._interrupt.__exit__(exc_type, exc, tb)
        else:
            self._bar.close()
            self._interrupt.__exit__(exc_type, exc, tb)
            if isinstance(exc, FloatingPointError) and not str(exc).startswith("training"):
                # a solver inside a step met the overflow first: say where, and what was kept
                self._diverged(f"at {self._where(self._steps_run)}, {str(exc).rstrip('.')}")
            if isinstance(exc, ValueError):
                # e.g. the next step's input check met weights an update had overflowed
                name = self._non_finite_tensor()
                if name is not None:
                    self._diverged(f"{name} became NaN or inf by {self._where(self._steps_run)}")

    def epochs(self) -> Iterator[Epoch]:
        """The remaining epochs, each with its seeded sample order (see :func:`epoch_order`)."""
        start_epoch, start_batch = self.start
        for epoch in range(start_epoch, self.n_epochs):
            if epoch > start_epoch:  # the previous epoch has closed (validation, history)
                if self._save_at_epoch_end:
                    self._save_at_epoch_end = False
                    self.save()
                self._interrupt.raise_if_requested(force=True)
            order = epoch_order(self.seed, self.n, epoch, self.device)
            first = start_batch if epoch == start_epoch else 0
            yield Epoch(epoch, first, order, self.batch_size, self.steps_per_epoch)

    def step_done(self, batch: Batch, count: int, *, loss: torch.Tensor | None = None,
                  postfix: dict[str, str] | None = None,
                  callback_args: tuple[Any, ...] = ()) -> None:
        """After a step: flag a non-finite ``loss``, step the scheduler, move the position past
        ``batch``, advance the bar, run the callback, check for divergence every
        ``check_every`` steps, save if ``count`` is a multiple of ``checkpoint_every`` (on an
        epoch's last step, once the model has closed the epoch: at the next epoch), and raise
        ``KeyboardInterrupt`` if Ctrl-C was pressed (after an epoch's last step, when the next
        epoch starts instead, so that the model closes the epoch first).

        Parameters
        ----------
        batch : Batch
            The mini-batch just processed.
        count : int
            The model's step counter after this step.
        loss : torch.Tensor or None, default=None
            The step's loss (any shape); checked for NaN/inf without host synchronisation.
        postfix : dict of str to str or None, default=None
            Values shown next to the progress bar.
        callback_args : tuple, default=()
            Arguments of the loop's callback; ``(count, watch)`` when empty.
        """
        if loss is not None:
            bad = ~torch.isfinite(loss.detach()).all()
            unset = self._first_bad < 0
            self._first_bad = torch.where(bad & unset, batch.step, self._first_bad)
        if self.scheduler is not None:
            self.scheduler.step()
        last = batch.batch + 1 == self.steps_per_epoch
        self.position = (batch.epoch + 1, 0) if last else (batch.epoch, batch.batch + 1)
        self._steps_run = batch.step + 1
        self._bar.update(1)
        if postfix is not None:
            self._bar.set_postfix(**postfix)
        if self.callback is not None:
            self.callback(*(callback_args or (count, self.watch)))
        if count % self.checkpoint_every == 0:
            if last:  # saved once the model has closed the epoch (its history, validation)
                self._save_at_epoch_end = True
            else:
                self.save()
        elif self._steps_run - self._checked >= self.check_every:
            self.verify()
        if not last:  # after an epoch's last step, at the next epoch: the model closes it first
            self._interrupt.raise_if_requested()

    def verify(self) -> None:
        """Raise ``FloatingPointError`` if a loss, a weight or the optimizer state went NaN/inf
        since the last check (one host synchronisation)."""
        first_bad = int(self._first_bad)
        if first_bad >= 0:
            self._diverged(f"the loss was NaN or inf at {self._where(first_bad)}")
        name = self._non_finite_tensor()
        if name is not None:
            since = self._where(self._checked) if self._steps_run > self._checked else "start"
            self._diverged(f"{name} became NaN or inf between {since} and "
                           f"{self._where(self._steps_run - 1)}")
        self._checked = self._steps_run

    def _where(self, step: int) -> str:
        epoch, batch = divmod(step, self.steps_per_epoch)
        return f"step {step} (epoch {epoch}, batch {batch})"

    def _non_finite_tensor(self) -> str | None:
        tensors: list[tuple[str, torch.Tensor]] = []
        if self.watch is not None:
            tensors += [(f"the model's {k!r}", v) for k, v in self.watch.state_dict().items()
                        if isinstance(v, torch.Tensor)]
        if self.optimizer is not None:
            tensors += [("the optimizer's state", v) for st in self.optimizer.state.values()
                        for v in st.values() if isinstance(v, torch.Tensor)]
        floats = [(k, v) for k, v in tensors if v.is_floating_point() and v.numel()]
        if not floats:
            return None
        finite = torch.stack([torch.isfinite(v).all() for _, v in floats])
        if bool(finite.all()):
            return None
        return floats[int((~finite).nonzero()[0, 0])][0]

    def _diverged(self, what: str) -> None:
        kept = (f"the last good checkpoint {self.last_good} was kept"
                if self.last_good is not None else "no checkpoint was written")
        raise FloatingPointError(
            f"training diverged: {what}; {kept}. Lower the learning rate (or the step size) "
            "and train again from the start, or check the data for extreme values (a resumed "
            "run keeps the settings it began with and would diverge the same way)."
        )

    def save(self) -> None:
        """Check for divergence, then checkpoint the current position (nothing is written
        without a checkpoint path)."""
        self.verify()
        if self._save is not None:
            self._save(*self.position)
            self.last_good = str(self.checkpoint)


__all__ = ["Batch", "Epoch", "MinibatchLoop", "epoch_order", "resuming"]
