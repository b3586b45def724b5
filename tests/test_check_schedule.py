"""The certificate's check schedule: predicted from the gaps' decay, bounded, on the grid."""

from __future__ import annotations

import numpy as np
import torch

import latentebm as le
from latentebm.solvers.check_schedule import CheckSchedule


def _schedule(tol: float = 1e-4, every: int = 10, max_iter: int = 1000) -> CheckSchedule:
    return CheckSchedule(2, tol, every, max_iter)


def _check(schedule: CheckSchedule, k: int, gaps: list[float]) -> int:
    """Run the check at ``k`` of the rows due, with these relative gaps of both rows; returns
    the first row's next check (it must be due at ``k``)."""
    due = schedule.due(k)
    assert due[0] and not schedule.due(k - 1)[0]
    schedule.advance(k, due, np.array(gaps)[due])
    return int(schedule.next_check[0])


def _flat_until(schedule: CheckSchedule, last: int) -> None:
    """Checks every 10 iterations up to ``last`` (excluded) with gaps that never fall."""
    for k in range(10, last, 10):
        _check(schedule, k, [1e-2, 1e-2])


def test_each_row_has_its_own_schedule() -> None:
    schedule = _schedule()
    _flat_until(schedule, 100)
    # the first row's gap falls to near the tolerance, the second's hardly
    _check(schedule, 100, [1.01e-4, 0.99e-2])
    assert list(schedule.next_check) == [110, 120]
    assert list(schedule.due(110)) == [True, False]
    schedule.keep(np.array([False, True]))
    assert list(schedule.due(110)) == [False] and list(schedule.due(120)) == [True]


def test_the_spacing_at_most_doubles_and_stays_within_a_quarter_of_the_run() -> None:
    schedule = _schedule(tol=1e-12)
    _flat_until(schedule, 200)
    # each check predicts thousands of iterations
    assert _check(schedule, 200, [0.9e-2, 0.9e-2]) == 220  # twice the last spacing
    assert _check(schedule, 220, [0.8e-2, 0.8e-2]) == 260  # twice again
    assert _check(schedule, 260, [0.7e-2, 0.7e-2]) == 330  # 260 // 4 = 65, rounded up


def test_no_decay_means_the_fixed_spacing() -> None:
    schedule = _schedule()
    _check(schedule, 10, [1e-2, 1e-2])
    assert _check(schedule, 20, [2e-2, 1e-2]) == 30  # nothing fell
    assert _check(schedule, 30, [float("nan"), float("inf")]) == 40


def test_a_stalling_decay_is_bounded_by_the_run_so_far() -> None:
    schedule = _schedule(every=5)
    k = 5
    _check(schedule, k, [1e-2, 1e-2])
    for k in range(10, 200, 5):
        if schedule.due(k).all():
            # each gap falls by 0.1 %: thousands of iterations predicted
            nxt = _check(schedule, k, [1e-2 * 0.999 ** k] * 2)
            assert nxt - k <= max(5, k // 4) + 5
            assert nxt % 5 == 0


def test_zero_tolerance_keeps_the_fixed_spacing() -> None:
    schedule = _schedule(tol=0.0)
    _check(schedule, 10, [1e-2, 1e-2])
    assert _check(schedule, 20, [1e-3, 1e-3]) == 30


def test_the_last_iteration_is_always_checked() -> None:
    schedule = _schedule(max_iter=25)
    _check(schedule, 10, [1e-1, 1e-1])
    assert _check(schedule, 20, [1e-2, 1e-2]) == 25


def test_admm_checks_less_often_yet_certifies() -> None:
    gen = torch.Generator().manual_seed(0)
    kernels = torch.randn(4, 1, 5, 5, generator=gen, dtype=torch.float64)
    op = le.ConvDictionary(kernels, boundary="circular").normalize_()
    Y = torch.randn(2, 1, 32, 32, generator=gen, dtype=torch.float64)
    seen: list[int] = []

    def callback(k: int, state) -> None:
        if state.gap is not None:
            seen.append(k)

    res = le.solve(Y, op, 0.1, method="admm", tol=1e-8, max_iter=3000, check_every=5,
                   callback=callback)
    assert bool(res.converged.all())
    assert all(k % 5 == 0 for k in seen) and seen[-1] == res.n_iter
    assert len(seen) < res.n_iter // 5
    reference = le.solve(Y, op, 0.1, method="admm", tol=1e-14, max_iter=20000)
    assert bool((res.energy - reference.energy <= res.gap + 1e-12).all())
    # each image's checks depend on its own gaps only: alone it gets the same codes
    for i in range(len(Y)):
        alone = le.solve(Y[i : i + 1], op, 0.1, method="admm", tol=1e-8, max_iter=3000,
                         check_every=5)
        assert alone.n_iter == int(res.n_iter_per_sample[i])
        torch.testing.assert_close(alone.z[0], res.z[i], rtol=0, atol=1e-10)
