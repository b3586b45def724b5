"""Run conventions shared by every experiment: one output folder holding ``config.json``,
``metrics.json``, ``checkpoint.safetensors`` and figures, all written atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .._io import write_json

# Keys that may change between a run and its resumption without invalidating the checkpoint.
RESUMABLE_CHANGES = {"resume", "epochs", "device", "quiet", "out"}


class Run:
    """An experiment's output folder. ``resume=True`` requires the saved configuration to match
    the new one, apart from :data:`RESUMABLE_CHANGES`."""

    def __init__(self, out: str | Path, config: dict[str, Any], *, resume: bool = False) -> None:
        self.out = Path(out)
        self.config = dict(config)
        self.started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        saved_path = self.out / "config.json"
        if resume and saved_path.exists():
            saved = json.loads(saved_path.read_text())
            diffs = [
                f"{k}: saved {saved.get(k)!r}, now {self.config.get(k)!r}"
                for k in sorted(set(saved) | set(self.config))
                if k not in RESUMABLE_CHANGES and saved.get(k) != self.config.get(k)
            ]
            if diffs:
                raise ValueError(
                    f"--resume: {self.out} holds a run with another configuration ("
                    + "; ".join(diffs) + ")"
                )
        write_json(saved_path, self.config)
        self.written: list[Path] = [saved_path]

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

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> Path:
        return write_json(self.path(name), metrics)

    def summary(self) -> str:
        files = sorted({str(p) for p in self.written if p.exists()})
        return "wrote:\n" + "\n".join(f"  {f}" for f in files)
