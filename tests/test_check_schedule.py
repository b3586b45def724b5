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


def test_each_row_has_its_own_schedule() -> None:
    schedule = _schedule()
    _check(schedule, 10, [1e-1, 1e-1])
    _check(schedule, 20, [1e-2, 9e-2])
    assert list(schedule.next_check) == [30, 30]
    _check(schedule, 30, [8e-4, 8e-2])  # the second row's gap falls slowly: 15 at most
    assert list(schedule.next_check) == [40, 50]
    assert list(schedule.due(40)) == [True, False]
    schedule.keep(np.array([False, True]))
    assert list(schedule.due(50)) == [True]


def test_geometric_decay_is_predicted_and_rounded_to_the_grid() -> None:
    schedule = _schedule()
    assert _check(schedule, 10, [1e-1, 1e-1]) == 20  # no decay measured yet
    # 1e-1 -> 1e-2 in 10 iterations: 1e-4 is 20 more, but at most half the run so far
    assert _check(schedule, 20, [1e-2, 5e-2]) == 30
    # 1e-2 -> 8e-4 in 10: 8.2 more
    assert _check(schedule, 30, [8e-4, 2e-2]) == 40
    # near the crossing the prediction (1 iteration) is rounded up to the grid
    assert _check(schedule, 40, [1.01e-4, 1e-2]) == 50


def test_the_spacing_at_most_doubles() -> None:
    schedule = _schedule(tol=1e-12)
    _check(schedule, 10, [1e-1, 1e-1])
    assert _check(schedule, 20, [1e-2, 1e-2]) == 30  # 100 iterations predicted
    assert _check(schedule, 30, [1e-3, 1e-3]) == 50  # min(2·10, 30 // 2) = 15, rounded up
    assert _check(schedule, 50, [1e-5, 1e-5]) == 80  # min(2·20, 50 // 2) = 25, rounded up


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
            assert nxt - k <= max(5, min(2 * 5 * 2 ** 10, k // 2)) + 5
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
