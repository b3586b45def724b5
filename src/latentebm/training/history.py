"""A training history's per-epoch entry, kept up to date after every step so that a checkpoint
written mid-epoch holds the running sums and a resumed run continues them.

The history is a ``list[dict]``, one entry per epoch: ``{"epoch": e, ...values..., "partial":
bool, "seconds": float}``. While the epoch runs its entry is republished with ``partial=True``
after every :meth:`EpochRecord.add`; :meth:`EpochRecord.close` publishes it with
``partial=False``. Another ``fit`` of the same model appends its own epochs, numbered from 0.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import torch

from . import distributed as dist


class EpochRecord(ABC):
    """Base class: subclasses keep their sums, say what the entry holds (:meth:`values`) and how
    to take the sums back from a partial entry (:meth:`restore`); they call :meth:`publish`
    (``partial=True``) from their ``add``.

    Parameters
    ----------
    history : list of dict
        The training history, one entry per epoch; this record's entry is kept at its end.
    epoch : int
        The epoch this record is for.
    """

    def __init__(self, history: list[dict[str, Any]], epoch: int) -> None:
        self.history, self.epoch = history, epoch
        self.seconds = 0.0
        self.start = time.perf_counter()
        self.published = False  # whether the history's last entry is this record's

    @classmethod
    def open(cls, history: list[dict[str, Any]], epoch: int, *, resumed: bool) -> EpochRecord:
        """A record for ``epoch``; when ``resumed`` and the history ends with that epoch's
        partial entry, the entry is taken off the history and its sums continue.

        Parameters
        ----------
        history : list of dict
            The training history.
        epoch : int
            The epoch to record.
        resumed : bool
            Whether the run resumed in the middle of this epoch.

        Returns
        -------
        EpochRecord
            An instance of ``cls``.
        """
        record = cls(history, epoch)
        last = history[-1] if history and history[-1].get("epoch") == epoch else None
        if resumed and last is not None and last.get("partial"):
            history.pop()
            record.restore(last)
            record.seconds = last["seconds"]
        return record

    @abstractmethod
    def values(self) -> dict[str, Any]:
        """The entry's values between ``epoch`` and ``partial``."""

    @abstractmethod
    def restore(self, entry: dict[str, Any]) -> None:
        """Take the running sums back from a partial ``entry`` of this epoch.

        Parameters
        ----------
        entry : dict
            A history entry published with ``partial=True``.
        """

    def close(self) -> None:
        self.publish(partial=False)

    def publish(self, partial: bool) -> None:
        """Replace this record's entry at the end of the history (append it the first time:
        an entry of the same epoch there is an earlier ``fit``'s).

        Parameters
        ----------
        partial : bool
            Whether the epoch is still running.
        """
        if self.published:
            self.history.pop()
        self.published = True
        self.history.append(self.entry(partial, self.seconds + time.perf_counter() - self.start))

    def entry(self, partial: bool, seconds: float) -> dict[str, Any]:
        """This epoch's history entry.

        Parameters
        ----------
        partial : bool
            Whether the epoch is still running.
        seconds : float
            Time spent in the epoch so far.

        Returns
        -------
        dict
            ``{"epoch": epoch, **values(), "partial": partial, "seconds": seconds}``.
        """
        return {"epoch": self.epoch, **self.values(), "partial": partial, "seconds": seconds}


class MeanRecord(EpochRecord):
    """Per-sample quantities ``KEYS`` summed over the epoch and published as means (named
    ``PREFIX + key``), with the sample count as ``COUNT_KEY``. :meth:`add` takes a dict of
    per-sample tensors ``(batch,)``, :meth:`add_sums` sums already taken over a batch;
    ``SUM_DTYPE`` (if set) is the dtype the sums are taken in. Under ``torchrun`` each process
    adds the sums over its share of a global batch and they are summed over the processes (one
    collective per batch, so every rank must add every batch), so every rank's history is the
    whole batches'.

    Parameters
    ----------
    history : list of dict
        The training history, one entry per epoch.
    epoch : int
        The epoch this record is for.
    """

    KEYS: tuple[str, ...] = ()
    PREFIX: str = ""
    COUNT_KEY: str = "samples"
    SUM_DTYPE: torch.dtype | None = None

    def __init__(self, history: list[dict[str, Any]], epoch: int) -> None:
        super().__init__(history, epoch)
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.count: int | float = 0

    def mean(self, key: str) -> float:
        """The running mean of ``key`` (0 before any sample).

        Parameters
        ----------
        key : str
            One of ``KEYS``.

        Returns
        -------
        float
        """
        return self.sums[key] / max(self.count, 1)

    def add(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Add a batch of per-sample values and republish the entry.

        Parameters
        ----------
        values : dict of str to torch.Tensor of shape (batch,)
            One tensor per key of ``KEYS`` (other keys are ignored).

        Returns
        -------
        dict of str to float
            The batch's sums (over every process), as :meth:`add_sums`.
        """
        sums = {key: (values[key] if self.SUM_DTYPE is None
                      else values[key].to(self.SUM_DTYPE)).sum() for key in self.KEYS}
        return self.add_sums(sums, int(values[self.KEYS[0]].shape[0]))

    def add_sums(self, sums: dict[str, torch.Tensor | float], count: int | float, *,
                 reduced: bool = False) -> dict[str, float]:
        """Add sums already taken over a batch and republish the entry.

        Parameters
        ----------
        sums : dict of str to torch.Tensor or float
            One scalar per key of ``KEYS``.
        count : int or float
            Number of samples (or total weight) the sums are over, on this process.
        reduced : bool, default=False
            The sums and ``count`` are already over every process (no collective).

        Returns
        -------
        dict of str to float
            The batch's sums of ``KEYS`` over every process.
        """
        if not reduced and dist.world_size() > 1:
            *added, total = dist.all_reduce_floats(
                [float(sums[key]) for key in self.KEYS] + [float(count)], what="of the epoch sums")
            sums = dict(zip(self.KEYS, added, strict=True))
            count = round(total) if isinstance(count, int) else total
        batch = {key: float(sums[key]) for key in self.KEYS}
        for key in self.KEYS:
            self.sums[key] += batch[key]
        self.count += count
        self.publish(partial=True)
        return batch

    def values(self) -> dict[str, Any]:
        return {**{self.PREFIX + k: self.mean(k) for k in self.KEYS}, self.COUNT_KEY: self.count}

    def entry(self, partial: bool, seconds: float) -> dict[str, Any]:
        """:meth:`EpochRecord.entry`, with the running sums (``running_sums``) while partial, so
        that a resumed epoch's means are the uninterrupted ones to the bit (mean × count is not
        always the sum)."""
        entry = super().entry(partial, seconds)
        if partial:
            entry["running_sums"] = dict(self.sums)
        return entry

    def restore(self, entry: dict[str, Any]) -> None:
        """Take the count and the sums back from a partial ``entry`` (mean × count for an entry
        without ``running_sums``).

        Parameters
        ----------
        entry : dict
            A history entry published with ``partial=True``.
        """
        self.count = entry[self.COUNT_KEY]
        saved = entry.get("running_sums", {})
        self.sums = {k: saved[k] if k in saved else entry[self.PREFIX + k] * self.count
                     for k in self.KEYS}


__all__ = ["EpochRecord", "MeanRecord"]
