"""numba's parallel loops (methods ``"gram_cd"`` and ``"admm"``'s fused step): how many threads
they run on, and whether this process may start them at all.

numba runs ``prange`` loops on its OpenMP threading layer, and GNU OpenMP does not survive
``fork``: a process forked after the layer started (``multiprocessing``'s default on Linux,
joblib's ``"multiprocessing"`` backend) is killed by numba at its first parallel loop and its
parent waits for it forever. Such a child runs the same problems without the compiled loops
(``"auto"`` picks the next method; the fused ADMM step becomes torch operations).
"""

from __future__ import annotations

import os

import torch

_started = False
"""Whether this process has run a parallel loop (started numba's threads)."""

_forked_after_start = False
"""Whether this process was forked from one whose numba threads had started."""


def _after_fork_in_child() -> None:
    global _forked_after_start
    _forked_after_start = _forked_after_start or _started


os.register_at_fork(after_in_child=_after_fork_in_child)


def parallel_loops_unusable() -> str | None:
    """Why this process cannot run numba's parallel loops, or None when it can."""
    if _forked_after_start:
        return ("this process was forked after numba's OpenMP threads had started in its "
                "parent, and GNU OpenMP does not survive fork (start worker processes with "
                "the 'spawn' or 'forkserver' method to use it there)")
    return None


def use_torch_threads() -> None:
    """Run the parallel loops on as many threads as torch uses (the caller's thread budget).

    Starting numba's OpenMP threading layer resets the OpenMP thread count that torch shares
    with it (``torch.set_num_threads(1)`` read 2 afterwards, so a later torch computation ran
    on other threads depending on whether a compiled solve had come before): torch's own count
    is set back once the layer is up."""
    import numba

    global _started
    _started = True
    n_threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS)))
    if torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)
