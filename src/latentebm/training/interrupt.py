"""Ctrl-C during training: finish the step in flight, save, then stop."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

from . import distributed

AGREE_EVERY = 8
"""Under ``torchrun`` the processes agree on a Ctrl-C at every this many safe points (and at
forced ones): one gloo all-reduce costs about 0.2 ms on one machine, a few per cent of a
millisecond-long step if it ran at every step."""
REPEAT_AFTER_S = 1.0
"""A second SIGINT counts (and interrupts at once) only this long after the first: under
``torchrun`` started from a terminal each process receives Ctrl-C twice within milliseconds,
from the terminal and forwarded by torchrun's agent."""


class ImmediateInterrupt(KeyboardInterrupt):
    """The second Ctrl-C: raised wherever the program is, so the step in flight may be half
    done and nothing is saved (the last checkpoint stays)."""


class GracefulInterrupt:
    """Context manager: the first SIGINT sets a flag that :meth:`raise_if_requested` turns into
    ``KeyboardInterrupt`` at the next safe point (under ``torchrun``, on every process at the
    same point, once any of them has the flag); a second SIGINT, :data:`REPEAT_AFTER_S` or
    more later, raises :class:`ImmediateInterrupt` at once."""

    def __init__(self) -> None:
        self.requested = False
        self._requested_at = 0.0
        self._previous = None
        self._safe_points = 0

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if not self.requested:
            self.requested, self._requested_at = True, now
        elif now - self._requested_at >= REPEAT_AFTER_S:
            raise ImmediateInterrupt

    def raise_if_requested(self, *, force: bool = False) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed here or, under ``torchrun``, in any
        process of the job: there every process calls this at the same points and they agree
        (one small collective) at every :data:`AGREE_EVERY`-th of them, and where ``force``.

        Parameters
        ----------
        force : bool, default=False
            Agree at this point whatever its count (an epoch's start, the end of training).
        """
        if distributed.world_size() == 1:
            if self.requested:
                raise KeyboardInterrupt
            return
        self._safe_points += 1
        if force or self._safe_points % AGREE_EVERY == 0:
            self.requested = distributed.any_rank(self.requested, what="that shares a Ctrl-C")
            if self.requested:
                raise KeyboardInterrupt
