"""Timing a call: warm-up runs, then repeated timed runs; median, p90 and spread."""
from __future__ import annotations

import time

import numpy as np


def run_times(run, repeats: int, clock=time.perf_counter) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``run()`` (``clock``: seconds)."""
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append((clock() - start) * 1000)
    return times


def summary(times: list[float]) -> dict:
    """Median, p90 and spread (p90 / p10) of times in milliseconds."""
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return {"median_ms": float(median), "p90_ms": float(p90), "spread": float(p90 / p10), "runs": len(times)}


def time_runs(run, warmup: int, repeats: int) -> dict:
    """``summary`` of ``repeats`` calls of ``run()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    return summary(run_times(run, repeats))
