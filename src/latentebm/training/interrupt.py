"""Ctrl-C during training: finish the step in flight, save, then stop."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class GracefulInterrupt:
    """Context manager: the first SIGINT sets a flag that :meth:`raise_if_requested` turns into
    ``KeyboardInterrupt`` at the next safe point; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def raise_if_requested(self) -> None:
        if self.requested:
            raise KeyboardInterrupt
