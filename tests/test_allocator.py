"""keep_large_allocations: glibc keeps freed large buffers, so the tensors of a solver's next
iteration do not page-fault their memory again."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

import latentebm as le


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _iteration(x: torch.Tensor) -> torch.Tensor:
    """Four temporaries of ``x``'s size, as in one step of a solver."""
    y = x * 2
    z = torch.sub(y, x)
    return torch.nn.functional.softshrink(z, 0.5) + 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_a_solver_loop_reuses_its_freed_tensors_without_page_faults():
    assert le.keep_large_allocations() is True
    x = torch.ones(10, 32, 128, 128, dtype=torch.float64)  # 42 MB, above glibc's own threshold
    for _ in range(3):  # the heap grows to hold one iteration's tensors, then keeps them
        x = _iteration(x)
    before = _minor_faults()
    for _ in range(5):
        x = _iteration(x)
    faults = _minor_faults() - before
    # fresh pages would be one fault per 4 KiB page: 20 tensors x 10 240 pages
    assert faults < 1024


@pytest.mark.parametrize("limit", [0, -1, 2**31, 1.5, True, "1G"])
def test_a_limit_outside_the_c_int_range_is_refused(limit):
    with pytest.raises(ValueError, match="limit_bytes"):
        le.keep_large_allocations(limit)
