"""Run conventions shared by every experiment: one output folder holding ``config.json``,
``metrics.json``, ``checkpoint.safetensors`` and figures, all written atomically, and used by
one run at a time (a lock file)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._io import write_bytes, write_json
from ..training import distributed
from ._lock import RunLock

# Keys that may change between a run and its resumption without invalidating the checkpoint.
RESUMABLE_CHANGES = {"resume", "epochs", "device", "quiet", "out"}
PER_PROCESS_KEYS = {"out", "device", "quiet", "data_dir", "images", "shards"}
"""Settings the processes of a ``torchrun`` job may give differently (paths as each machine
mounts them, the device each process picks); every other setting must agree."""

_REWRITTEN: dict[Path, bytes] = {}
"""``config.json`` files this process rewrote on ``--resume``, with their earlier content."""

_FIRST: list[Run] = []
"""Runs whose ``config.json`` this process wrote into a folder that had none."""


def _refuse_processes_that_differ(config: dict[str, Any]) -> None:
    """A ``ValueError``, on every process of a ``torchrun`` job alike, naming the settings in
    which some process differs from rank 0 (one collective; nothing on a single process)."""
    if distributed.world_size() == 1:
        return
    shared = {k: v for k, v in config.items() if k not in PER_PROCESS_KEYS}
    everyone = distributed.all_gather_object(shared, what="of the run's settings")
    diffs = [f"{k}: rank 0 {everyone[0].get(k)!r}, rank {r} {other.get(k)!r}"
             for r, other in enumerate(everyone[1:], start=1)
             for k in sorted(set(everyone[0]) | set(other))
             if everyone[0].get(k) != other.get(k)]
    if diffs:
        raise ValueError("the processes of this torchrun job were started with other settings ("
                         + "; ".join(diffs) + "); start every process with the same command")


def prepare_out(out: str | os.PathLike) -> Path:
    """``out`` as an existing, writable folder (created if missing), or a ``ValueError`` that
    says what is wrong with it."""
    if not str(out).strip():  # Path("") is the working folder: an unset $OUT, say
        raise ValueError("--out is empty; name the folder for the run's files")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {path}: cannot create the folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path} is not writable; choose another folder")
    return path


class Run:
    """An experiment's output folder, locked for this run until :meth:`close` (or exit).

    Parameters
    ----------
    out : str or os.PathLike
        The folder (created if missing). A file, a folder that cannot be written, or one that
        another live run is using is a ``ValueError``. Under ``torchrun`` only rank 0 locks it.
    config : dict
        The command's settings, written to ``config.json``.
    resume : bool
        Continue the run in ``out``. With or without it, a folder holding a run of another
        configuration (apart from :data:`RESUMABLE_CHANGES` and ``resumable``) is refused: its
        files would mix with this run's.
    resumable : iterable of str
        The command's own keys that may change on ``--resume`` (evaluation settings, time
        budgets), besides :data:`RESUMABLE_CHANGES`.

    Under ``torchrun`` the processes' settings are compared first (all but
    :data:`PER_PROCESS_KEYS`): a process started with another λ, seed or number of epochs
    would train on other batches or code with another λ, or wait for the others until the
    timeout. Rank 0 alone locks the folder and writes ``config.json``.
    """

    def __init__(self, out: str | Path, config: dict[str, Any], *, resume: bool = False,
                 resumable: Iterable[str] = ()) -> None:
        _refuse_processes_that_differ(config)
        self.out = prepare_out(out)
        self.config = dict(config)
        self.resumable = RESUMABLE_CHANGES | set(resumable)
        self.started = time.perf_counter()
        self.written: list[Path] = []
        main = distributed.is_main()
        self._lock = RunLock(self.out) if main else None
        try:
            if main:
                self._check_and_write_config(resume)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_args(cls, args: argparse.Namespace, **settings: Any) -> Run:
        """The run of a command: its folder ``args.out``, every flag but the private ones
        (``_...``) as its config, with ``settings`` (values the command resolved) over them,
        resumed when ``args.resume``.

        Parameters
        ----------
        args : argparse.Namespace
            The command's parsed flags.
        **settings
            Config entries that replace or add to the flags'.

        Returns
        -------
        Run
        """
        config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        return cls(args.out, {**config, **settings}, resume=getattr(args, "resume", False))

    def _check_and_write_config(self, resume: bool) -> None:
        saved_path = self.out / "config.json"
        if saved_path.exists():
            try:
                saved_bytes = saved_path.read_bytes()
                saved = json.loads(saved_bytes)
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                if resume:
                    raise ValueError(f"--resume: {saved_path} is damaged ({exc})") from None
                saved = None  # a fresh run replaces it
            if resume and not isinstance(saved, dict):
                raise ValueError(f"--resume: {saved_path} is damaged (not a JSON object)")
            diffs = [
                f"{k}: saved {saved.get(k)!r}, now {self.config.get(k)!r}"
                for k in sorted(set(saved) | set(self.config))
                if k not in self.resumable and saved.get(k) != self.config.get(k)
            ] if isinstance(saved, dict) else []
            if diffs and resume:
                raise ValueError(
                    f"--resume: {self.out} holds a run with another configuration ("
                    + "; ".join(diffs) + ")"
                )
            if diffs:  # its files would stay beside this run's (other models, figures, shards)
                raise ValueError(
                    f"{self.out} holds a run with another configuration ("
                    + "; ".join(diffs) + "); choose another --out, or delete that folder to "
                    "start again there"
                )
            if resume and saved != self.config:
                _REWRITTEN[saved_path] = saved_bytes
        else:
            _FIRST.append(self)
        write_json(saved_path, self.config)
        self.written.append(saved_path)

    @property
    def checkpoint(self) -> Path:
        path = self.out / "checkpoint.safetensors"
        if path not in self.written:
            self.written.append(path)
        return path

    def path(self, name: str) -> Path:
        """A file in the run folder; recorded so the CLI can list what was written."""
        p = self.out / name
        self.written.append(p)
        return p

    def close(self) -> None:
        """Release the folder's lock (idempotent)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> Path:
        return write_json(self.path(name), metrics)

    def summary(self) -> str:
        files = sorted({str(p) for p in self.written if p.exists()})
        return "wrote:\n" + "\n".join(f"  {f}" for f in files)


def restore_configs() -> None:
    """Put back the ``config.json`` of every run this process resumed with other
    :data:`RESUMABLE_CHANGES` (another ``--epochs``), for a command that then refused to go on
    (the CLI calls it on a ``ValueError``): the folder keeps describing the run its files are
    from."""
    for path, content in _REWRITTEN.items():
        write_bytes(path, content)
    _REWRITTEN.clear()


def remove_first_configs() -> None:
    """Delete the ``config.json`` of every run this process began in a folder that had none
    and that failed before writing anything else there (the CLI calls it when a command
    fails): the folder would otherwise refuse the corrected command as "a run with another
    configuration"."""
    for run in _FIRST:
        config = run.out / "config.json"
        if not any(p.exists() for p in run.written if p != config):
            config.unlink(missing_ok=True)
    _FIRST.clear()


def keep_configs() -> None:
    """Forget the earlier ``config.json`` contents and the runs begun (the CLI calls it when a
    command ends)."""
    _REWRITTEN.clear()
    _FIRST.clear()
