"""keep_large_allocations: glibc keeps freed large buffers, so the tensors of a solver's next
iteration do not page-fault their memory again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import latentebm as le

# Run in a fresh process: the claim is about a program that makes the setting at start (as the
# latentebm command does); in a process whose heap hundreds of tests have fragmented, some
# tensors still come from fresh pages.
LOOP = """
import resource, sys, torch
import latentebm as le

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def iteration(x):  # four temporaries of x's size, as in one step of a solver
    y = x * 2
    z = torch.sub(y, x)
    return torch.nn.functional.softshrink(z, 0.5) + 1

kept = le.keep_large_allocations() if sys.argv[1] == "kept" else False
x = torch.ones(10, 32, 128, 128, dtype=torch.float64)  # 42 MB, above glibc's own threshold
for _ in range(5):  # the heap grows to hold one iteration's tensors
    x = iteration(x)
before = faults()
for _ in range(10):
    x = iteration(x)
print(kept, faults() - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", LOOP, setting], check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_a_solver_loop_reuses_its_freed_tensors_without_page_faults():
    kept, with_setting = _faults("kept")
    _, without = _faults("default")
    assert kept == "True"
    # fresh pages are one fault per 4 KiB page: 40 tensors x 10 240 pages in 10 iterations;
    # with the setting most iterations fault nothing, now and then one tensor is fresh
    fresh = 40 * 10_240
    assert without > 0.9 * fresh
    assert with_setting < 0.25 * fresh


@pytest.mark.parametrize("limit", [0, -1, 2**31, 1.5, True, "1G"])
def test_a_limit_outside_the_c_int_range_is_refused(limit):
    with pytest.raises(ValueError, match="limit_bytes"):
        le.keep_large_allocations(limit)
