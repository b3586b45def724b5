"""How far apart ADMM's certificate checks may be: the cap of ``solvers/check_schedule.py``.

B3's image and filters (``b3_conv_sparse_coding.py``), λ = 0.05, float64, with circular and
with ``"full"`` boundaries. For each, ADMM runs 700 iterations evaluating its certificate every
10 (``tol=0``, so nothing stops and the schedule keeps the fixed spacing), which records the
worst relative gap at every tenth iteration; the cost of an iteration and of a check are
timed from two 200-iteration runs (one check, and a check every 10). The schedule's rule is
then replayed on those traces for several caps on the spacing (a share of the iterations run so
far, besides "at most twice the previous spacing"), and each replay's stopping iteration, check
count and time (iterations and checks at their measured costs) are tabulated against the fixed
spacing. The replay assumes the gap at an iteration does not depend on which earlier
iterations were checked (the best dual value seen does a little).

``python benchmarks/check_schedule.py`` (about a minute on 2 threads) writes
``results/check_schedule.md``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from b3_conv_sparse_coding import LAM, fixed_filters, load_image, pin_threads, tikhonov_highpass

RESULTS = Path(__file__).resolve().parent / "results"
EVERY = 10
TOLERANCES = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6)
CAPS = {"fixed spacing": None, "half the run": 0.5, "a third": 1 / 3, "a quarter": 0.25,
        "an eighth": 0.125}


def trace_and_costs(op, Y) -> tuple[list[tuple[int, float]], float, float]:
    """The worst relative gap every ``EVERY`` iterations, and the seconds of one iteration and
    of one check."""
    import latentebm as le

    trace: list[tuple[int, float]] = []

    def callback(k: int, state) -> None:
        if state.gap is not None:
            trace.append((k, float((state.gap / state.energy).max())))

    le.solve(Y, op, LAM, method="admm", tol=0.0, max_iter=700, check_every=EVERY,
             callback=callback)
    timings = []
    for check_every in (1000, EVERY):
        best = math.inf
        for _ in range(2):
            start = time.perf_counter()
            le.solve(Y, op, LAM, method="admm", tol=0.0, max_iter=200, check_every=check_every)
            best = min(best, time.perf_counter() - start)
        timings.append(best)
    per_iteration = timings[0] / 200
    per_check = (timings[1] - timings[0]) / (200 // EVERY - 1)
    return trace, per_iteration, per_check


def replay(trace, tol: float, share: float | None) -> tuple[int, int] | None:
    """Stopping iteration and number of checks of the schedule with this cap (None: the fixed
    spacing), or None when the trace ends first. Mirrors ``CheckSchedule.advance``."""
    gaps = dict(trace)
    if share is None:
        stop = next((k for k, g in trace if g <= tol), None)
        return None if stop is None else (stop, stop // EVERY)
    k, step, previous, checks = EVERY, EVERY, None, 0
    while k in gaps:
        checks += 1
        gap = gaps[k]
        if gap <= tol:
            return k, checks
        spacing = EVERY
        if previous is not None and gap < previous[1]:
            predicted = (k - previous[0]) * math.log(tol / gap) / math.log(gap / previous[1])
            longest = max(EVERY, min(2 * step, int(k * share)))
            spacing = EVERY * math.ceil(min(max(math.ceil(predicted), 1), longest) / EVERY)
        previous, step = (k, gap), spacing
        k += spacing
    return None


def main() -> None:
    pin_threads(2)
    import numpy as np
    import torch

    import latentebm as le

    torch.set_num_threads(2)
    kernels = torch.from_numpy(fixed_filters(2))[:, None]
    Y = torch.from_numpy(tikhonov_highpass(load_image("kodim23.png")))[None, None]
    load_before = os.getloadavg()[0]
    lines = [
        "# ADMM's certificate checks: how far apart they may be",
        "",
        "How to reproduce: `.venv/bin/python benchmarks/check_schedule.py` (2 threads, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). B3's image and filters, "
        f"λ = {LAM}, float64. The gap traces come from one ADMM run per boundary that checks "
        f"every {EVERY} iterations; each cell replays the schedule's rule on that trace with "
        "the spacing capped at twice the previous one and at the share of the iterations run "
        "so far named by the column, and gives the stopping iteration, the number of checks "
        "and the time they would cost (iterations and checks at the costs measured below). "
        "The library uses a quarter.",
        "",
    ]
    for boundary in ("circular", "full"):
        op = le.ConvDictionary(kernels, boundary=boundary)
        trace, per_iteration, per_check = trace_and_costs(op, Y)
        lines += [f"## {boundary} boundary", "",
                  f"One iteration {1e3 * per_iteration:.1f} ms, one check "
                  f"{1e3 * per_check:.1f} ms.", "",
                  "| tol | " + " | ".join(CAPS) + " |", "|---:|" + "---:|" * len(CAPS)]
        for tol in TOLERANCES:
            cells = [f"{tol:.0e}"]
            for share in CAPS.values():
                result = replay(trace, tol, share)
                if result is None:
                    cells.append("not reached in 700")
                    continue
                stop, checks = result
                seconds = stop * per_iteration + checks * per_check
                cells.append(f"{stop} it., {checks} checks, {seconds:.2f} s")
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
        gaps = np.array([g for _, g in trace])
        lines += ["", "Worst relative gap at iterations 100, 200, ..., 700: "
                  + ", ".join(f"{g:.1e}" for g in gaps[9::10]) + ".", ""]
    lines[2] += f" Load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after."
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "check_schedule.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
