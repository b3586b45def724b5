"""One run per output folder: a lock file holding the owner's host, pid and a token.

The lock is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems). It
guards against two processes; within one process commands run one after another, so a lock this
process left behind is taken over. A lock left by a process that no longer exists on this host
(killed with SIGKILL, a crash) is stale and taken over too; a lock from another host cannot be
checked and is reported with its path so the user can delete it by hand.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
from pathlib import Path

LOCK_NAME = ".latentebm.lock"

_HELD: dict[Path, RunLock] = {}


class RunLock:
    """The lock of one output folder; :meth:`release` (or interpreter exit) removes it.

    Parameters
    ----------
    folder : pathlib.Path
        An existing folder.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.owner = f"{socket.gethostname()} {os.getpid()} {secrets.token_hex(4)}"
        self._acquire()
        _HELD[self.path] = self

    def _acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                if not self._remove_if_stale():
                    raise ValueError(self._busy_message()) from None
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.owner + "\n")
            return
        raise ValueError(self._busy_message())

    def _read(self) -> str | None:
        try:
            return self.path.read_text().strip()
        except OSError:
            return None

    def _holder(self) -> tuple[str, int] | None:
        """``(host, pid)`` from the lock file (``host pid token``), ``None`` if unreadable."""
        fields = (self._read() or "").split()
        if len(fields) < 2 or not fields[1].isdigit():
            return None
        return fields[0], int(fields[1])

    def _remove_if_stale(self) -> bool:
        """Delete the lock if its process is gone from this host, or is this process (whose
        earlier run in the folder has ended: commands run one after another in a process);
        whether it was deleted."""
        holder = self._holder()
        if holder is None or holder[0] != socket.gethostname():
            return False
        if holder[1] != os.getpid() and _alive(holder[1]):
            return False
        self.path.unlink(missing_ok=True)
        return True

    def _busy_message(self) -> str:
        holder = self._holder()
        who = f"process {holder[1]} on {holder[0]}" if holder else "another run"
        return (f"--out {self.path.parent} is in use by {who} (lock file {self.path}); wait "
                "for it to finish or choose another --out. If no run is using it, delete the "
                "lock file.")

    def release(self) -> None:
        """Remove the lock file if this lock still owns it (idempotent)."""
        if _HELD.get(self.path) is self:
            del _HELD[self.path]
        if self._read() == self.owner:
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def release_all() -> None:
    """Release every lock this process holds (the CLI calls it when a command ends)."""
    for lock in list(_HELD.values()):
        lock.release()


atexit.register(release_all)
