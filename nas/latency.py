"""Deployment latency: an exported subnet timed in an onnxruntime session (warm-up, then repeats)."""
from __future__ import annotations

import time

import numpy as np

from nas.onnx_export import INPUT


def time_session(session, resolution: int, warmup: int = 5, repeats: int = 30) -> dict:
    """Median, p90 and spread (p90 / p10) of single-image runs, in milliseconds."""
    x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
    for _ in range(warmup):
        session.run(None, {INPUT: x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {INPUT: x})
        times.append((time.perf_counter() - start) * 1000)
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return {"median_ms": float(median), "p90_ms": float(p90), "spread": float(p90 / p10), "runs": repeats}
