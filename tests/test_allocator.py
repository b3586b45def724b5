"""keep_large_allocations: glibc keeps freed large buffers, so a tensor of a size just freed
does not page-fault its memory again."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

import latentebm as le

MIB = 1 << 20


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_a_freed_large_tensor_is_reused_without_page_faults():
    assert le.keep_large_allocations() is True
    for _ in range(3):  # the heap grows to hold it (the first one or two fault), then is kept
        torch.empty(64 * MIB // 8, dtype=torch.float64).fill_(1.0)
    before = _minor_faults()
    torch.empty(64 * MIB // 8, dtype=torch.float64).fill_(2.0)
    faults = _minor_faults() - before
    # fresh pages would be one fault per 4 KiB page: 16384 for 64 MiB
    assert faults < 1024


@pytest.mark.parametrize("limit", [0, -1, 2**31, 1.5, True, "1G"])
def test_a_limit_outside_the_c_int_range_is_refused(limit):
    with pytest.raises(ValueError, match="limit_bytes"):
        le.keep_large_allocations(limit)
