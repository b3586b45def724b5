"""Client for the SPAMS worker process (``_spams_worker.py`` under ``.venv-spams``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from _common import HERE, SPAMS_PYTHON, log


class SpamsUnavailable(RuntimeError):
    pass


def spams_environment(threads: int) -> dict[str, str]:
    """The worker's environment: SPAMS runs ``numThreads`` OpenMP threads, each calling a
    single-threaded BLAS, so it uses ``threads`` cores like everyone else. With the pinned
    ``OPENBLAS_NUM_THREADS`` inherited, each of its 2 OpenMP threads started 2 OpenBLAS ones
    (4 on 2 cores): trainDL took 46 ms per B2 minibatch against 7.9 ms (2026-12-07)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


class SpamsWorker:
    """One SPAMS process for a whole benchmark; arrays go through ``.npy`` files in ``tmp``."""

    def __init__(self, raw_dir: Path, threads: int) -> None:
        if not SPAMS_PYTHON.exists():
            raise SpamsUnavailable(
                f"{SPAMS_PYTHON} does not exist; run `bash benchmarks/setup_peers.sh`"
            )
        raw_dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self.tmp = Path(tempfile.mkdtemp(prefix="spams_io_", dir=raw_dir))
        self.stderr_path = raw_dir / "spams_worker.stderr.log"
        self.stderr = open(self.stderr_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(SPAMS_PYTHON), "-u", str(HERE / "_spams_worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=spams_environment(threads),
        )
        hello = self._read()
        if not hello.get("ready"):
            self.close()
            raise SpamsUnavailable(f"SPAMS worker did not start: {hello}")
        self.version = hello["spams"]
        self._n = 0

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@RESULT "):
                return json.loads(line[len("@@RESULT ") :])
        self.stderr.flush()
        tail = self.stderr_path.read_text()[-2000:]
        raise SpamsUnavailable(f"SPAMS worker exited (rc={self.proc.wait()}): {tail}")

    def call(self, op: str, **req) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "threads": self.threads, **req}) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if not out.get("ok", False):
            raise RuntimeError(f"SPAMS {op} failed: {out.get('error')}")
        return out

    def path(self, stem: str) -> Path:
        self._n += 1
        return self.tmp / f"{stem}_{self._n}.npy"

    def load(self, key: str, array: np.ndarray, *, transpose: bool) -> None:
        p = self.path(key)
        np.save(p, np.asarray(array, dtype=np.float64))
        self.call("load", key=key, path=str(p), transpose=transpose)
        p.unlink()

    def run_for_array(self, op: str, **req) -> tuple[np.ndarray, dict]:
        out_path = self.path(op)
        info = self.call(op, out=str(out_path), **req)
        arr = np.load(out_path)
        out_path.unlink()
        return arr, info

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_worker(raw_dir: Path, threads: int) -> SpamsWorker | None:
    """A worker, or None (with the reason logged) when SPAMS is not installed."""
    try:
        w = SpamsWorker(raw_dir, threads)
    except SpamsUnavailable as exc:
        log(f"SPAMS contenders skipped: {exc}")
        return None
    log(f"SPAMS {w.version} worker started ({SPAMS_PYTHON})")
    return w
