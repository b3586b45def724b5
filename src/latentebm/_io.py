"""Atomic file writes: write to a temporary name in the same folder, then ``os.replace``.

This is the one place that writes files: figures, JSON, IDX files and checkpoints all go
through :func:`atomic_path`. Files are created with mode ``0o666`` filtered by the process
umask (as ``open`` does), not ``tempfile.mkstemp``'s private ``0o600``, so that results written
into a shared folder can be read by the people it is shared with.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_atomic", "write_json", "write_bytes", "file_mode"]

_ATTEMPTS = 100


def file_mode() -> int:
    """The permission bits a new file gets here: ``0o666`` without the process umask."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no other way to read it; restored at once
    os.umask(mask)
    return 0o666 & ~mask


def _create_temporary(target: Path, suffix: str) -> Path:
    """Create an empty file beside ``target`` with a fresh random name, honouring the umask."""
    for _ in range(_ATTEMPTS):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}{suffix}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {target}")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The final file. Its folder is created if missing.
    suffix : str
        Appended to the temporary name (some writers choose a format by extension).

    Yields
    ------
    pathlib.Path
        An existing empty file to write to. On an exception it is deleted and ``path`` is left
        as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target, suffix)
    try:
        yield tmp
        # a writer may have replaced the file with a private one (safetensors' save_file
        # writes 0o600): the result gets what a new file gets here
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any], suffix: str = "") -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` in one step.

    Parameters
    ----------
    path : str or os.PathLike
        The final file.
    writer : callable
        ``writer(tmp)`` writes the whole content to the path it is given.
    suffix : str
        Appended to the temporary name.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path, suffix) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    return write_atomic(path, lambda p: p.write_bytes(data))


def json_digest(entries: dict[str, Any], *, excluding: str) -> str:
    """SHA-256 of ``entries`` but the one named ``excluding`` (where a file keeps its own
    checksum), as canonical JSON (sorted keys).

    Parameters
    ----------
    entries : dict
        JSON-ready entries (a checkpoint's metadata, a shard index).
    excluding : str
        The key left out.

    Returns
    -------
    str
        The hex digest.
    """
    content = {k: v for k, v in entries.items() if k != excluding}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Pretty JSON (sorted keys, arrays as lists, NaN and infinities as ``null``: JSON has no
    such numbers), written atomically; returns ``path``."""
    text = json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False,
                      default=_jsonable) + "\n"
    return write_atomic(path, lambda p: p.write_text(text))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists, tuples and arrays) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return _finite(value.tolist())
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
