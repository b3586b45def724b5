"""Keep freed large CPU buffers for the next tensor instead of handing them back to the kernel.

glibc's ``malloc`` serves every request above its mmap threshold (adaptive, at most 32 MiB) with
fresh pages from the kernel and returns them on ``free``, so the next tensor of that size is
page-faulted and zero-filled again, page by page. The convolutional solvers create several
tensors the size of the codes per iteration (42 MB for 10 images of 128x128 with 32 float64
maps), and that refilling cost more than the arithmetic: one ADMM iteration on that batch took
98 ms by default and 41 ms with these thresholds raised, one FISTA iteration 175 ms and 76 ms,
and a FISTA iteration on 10 000 MNIST-sized signals with 256 atoms 45 ms and 34 ms (2 threads,
float64; ``benchmarks/results/allocator.md``).

This is a process-wide setting, so the library never makes it on import: the ``latentebm``
command makes it at start, and a program calls :func:`keep_large_allocations` itself. The
environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do the same for
any program (they must be set before it starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
DEFAULT_LIMIT = 1 << 30
"""Requests up to 1 GiB come from the heap, and up to 1 GiB of freed memory stays in it."""
_INT_MAX = 2**31 - 1


def keep_large_allocations(limit_bytes: int = DEFAULT_LIMIT) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit_bytes``.

    Afterwards requests below ``limit_bytes`` come from the heap and freed memory stays there
    until more than ``limit_bytes`` of it is free at the top, so a tensor of a size just freed
    reuses its pages. The process may then hold up to ``limit_bytes`` of memory it no longer
    uses.

    Parameters
    ----------
    limit_bytes : int, default=2**30
        Both thresholds, in bytes: ``1 ≤ limit_bytes < 2**31``.

    Returns
    -------
    bool
        Whether both settings took effect: ``False`` where the C library is not glibc (macOS,
        Windows, musl), which then keeps its own policy.

    Raises
    ------
    ValueError
        ``limit_bytes`` not an integer in ``[1, 2**31)``.
    """
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) \
            or not 1 <= limit_bytes <= _INT_MAX:
        raise ValueError(f"limit_bytes must be an integer in [1, 2**31), got {limit_bytes!r}")
    libc = _glibc()
    if libc is None:
        return False
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, limit_bytes)
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, limit_bytes)
    return bool(mmap_set) and bool(trim_set)


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


__all__ = ["DEFAULT_LIMIT", "keep_large_allocations"]
