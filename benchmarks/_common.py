"""Shared pieces of the benchmark harness: thread pinning, timing, energies, output files.

:func:`pin_threads` must run before NumPy, SciPy or PyTorch are imported anywhere (``run.py``
calls it first thing), because OpenBLAS / OpenMP read their thread counts at load time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPAMS_PYTHON = HERE / ".venv-spams" / "bin" / "python"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def own_peak_rss_mb() -> float:
    """This process's own peak resident set size in MB: ``VmHWM`` of ``/proc/self/status``.

    ``ru_maxrss`` keeps, across ``exec``, the resident size of the parent a process was forked
    from (a child of a 1.6 GB parent read 1551 MB by ``ru_maxrss`` and 8.7 MB by ``VmHWM``), so
    it is only the fallback where ``/proc`` is missing.
    """
    import resource

    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status
                        if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pin_threads(n: int, wait_policy: str = "PASSIVE") -> dict[str, str]:
    """Set the BLAS/OpenMP thread variables (inherited by the SPAMS subprocess too).

    ``OMP_WAIT_POLICY=PASSIVE`` makes idle OpenMP threads sleep instead of spinning. On a
    machine shared with other jobs, spinning threads of PyTorch's (and SPAMS') libgomp fight
    the other processes for the cores: a 2-thread FISTA solve measured here took 70 s with the
    default policy and 4.3 s with PASSIVE while the load average was ~7 on 2 cores.
    """
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    if wait_policy:
        os.environ["OMP_WAIT_POLICY"] = wait_policy
    return {var: os.environ[var] for var in (*THREAD_VARS, "OMP_WAIT_POLICY") if var in os.environ}


def limit_runtime_threads(n: int) -> dict[str, object]:
    """After the imports: torch intra-op threads and threadpoolctl limits for NumPy/SciPy."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)
    pools = [
        {k: p.get(k) for k in ("internal_api", "num_threads", "version")} for p in threadpool_info()
    ]
    return {"torch_threads": torch.get_num_threads(), "threadpools": pools}


def clock() -> float:
    return time.perf_counter()


SETTLE_SECONDS = 0.3
"""Pause before each timed run (:func:`settle`)."""


def settle() -> None:
    """Sleep until the threads the harness's own NumPy work woke have gone idle: OpenBLAS keeps
    its threads spinning for about 0.1 s after a call, and a run started meanwhile shares the
    cores with them. Measured here (B1a-10, 10 000 digits, 2 threads): ``solve(method=
    "gram_cd")`` took 109–127 ms right after the harness scored the previous run's codes and
    85–89 ms after this pause. SPAMS' worker shares the same cores, so the pause comes before
    its runs too (its effect on SPAMS was not measured)."""
    time.sleep(SETTLE_SECONDS)


class PausableClock:
    """Wall clock that can be paused (while snapshots are taken or energies evaluated)."""

    def __init__(self) -> None:
        self.start = clock()
        self.paused = 0.0
        self._pause_started: float | None = None

    def pause(self) -> None:
        self._pause_started = clock()

    def resume(self) -> None:
        assert self._pause_started is not None
        self.paused += clock() - self._pause_started
        self._pause_started = None

    def elapsed(self) -> float:
        now = clock() if self._pause_started is None else self._pause_started
        return now - self.start - self.paused


def lasso_energy64(Y, W, Z, lam: float):
    """Per-sample ``½‖y − Wz‖² + λ‖z‖₁`` in float64 NumPy, whatever the contender returned.

    ``Y`` ``(n, n_features)``, ``W`` ``(n_features, n_atoms)``, ``Z`` ``(n, n_atoms)``.
    """
    import numpy as np

    Y = np.asarray(Y, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    R = Y - Z @ W.T
    return 0.5 * np.einsum("ij,ij->i", R, R) + lam * np.abs(Z).sum(1)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)


def save_npy_atomic(path: Path, array) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, array)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def spams_version() -> str | None:
    """The SPAMS version in ``benchmarks/.venv-spams``, or None when it is not importable."""
    if not SPAMS_PYTHON.exists():
        return None
    code = "import importlib.metadata as m, spams; print(m.version('spams'))"
    try:
        out = subprocess.run(
            [str(SPAMS_PYTHON), "-c", code], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_digest(package_dir: Path) -> str:
    """SHA-1 over the package's ``.py`` files: identifies the code measured, even uncommitted."""
    import hashlib

    h = hashlib.sha1()
    for f in sorted(package_dir.rglob("*.py")):
        h.update(str(f.relative_to(package_dir)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def environment(threads: int, thread_info: dict) -> dict:
    """Machine, thread settings and library versions, recorded with every table."""
    import numpy as np
    import scipy
    import sklearn
    import threadpoolctl
    import torch

    import latentebm

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "unknown", ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "latentebm_src_sha1": source_digest(Path(latentebm.__file__).parent),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "threads": threads,
        "thread_env": {var: os.environ.get(var) for var in (*THREAD_VARS, "OMP_WAIT_POLICY")},
        **thread_info,
        "versions": {
            "latentebm": latentebm.__version__,
            "latentebm_commit": commit + ("+dirty" if dirty else ""),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "threadpoolctl": threadpoolctl.__version__,
            "spams": spams_version(),
            "numba": _numba_version(),
        },
    }


def _numba_version() -> str | None:
    try:
        import numba
    except ImportError:
        return None
    return numba.__version__


def environment_lines(env: dict) -> list[str]:
    """The environment as markdown bullet lines for a table header."""
    v = env["versions"]
    pools = ", ".join(
        f"{p['internal_api']} {p.get('version') or ''} x{p['num_threads']}".replace("  ", " ")
        for p in env.get("threadpools", [])
    )
    spams = v["spams"] or "not available"
    return [
        f"- Machine: {env['cpu']}, {env['logical_cpus']} logical CPUs (shared with other "
        f"users while measuring); {env['date']}",
        f"- Threads: {env['threads']} for everyone: OMP/MKL/OPENBLAS_NUM_THREADS="
        f"{env['threads']}, OMP_WAIT_POLICY={env['thread_env'].get('OMP_WAIT_POLICY')}, "
        f"torch.set_num_threads({env['torch_threads']}), threadpoolctl "
        f"limit {env['threads']} ({pools}), scikit-learn n_jobs as stated, SPAMS "
        f"numThreads={env['threads']} (in its own process, its BLAS on 1 thread under each of "
        "its OpenMP threads)",
        f"- Versions: latentebm {v['latentebm']} (commit {v['latentebm_commit']}, "
        f"source sha1 {env.get('latentebm_src_sha1', '?')}), torch {v['torch']}, "
        f"numpy {v['numpy']}, scipy {v['scipy']}, scikit-learn {v['scikit-learn']}, "
        f"numba {v.get('numba') or 'not installed'}, "
        f"SPAMS {spams} (benchmarks/.venv-spams, numpy<2, system OpenBLAS), "
        f"Python {env['python']}",
    ]


def fmt_time(t: float | None) -> str:
    if t is None:
        return "—"
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if t < 1:
        return f"{t * 1e3:.0f} ms"
    if t < 100:
        return f"{t:.2f} s"
    return f"{t:.0f} s"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:.2f}×" if r < 100 else f"{r:.0f}×"


def markdown_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)
