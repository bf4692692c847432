"""Learning-rate schedules, and fitting them to a time budget."""
from __future__ import annotations

import math


def warmup_cosine(peak: float, step: int, total: int, warmup: int) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then cosine to zero at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def budget_scale(step_seconds: list[float], steps: list[float], seconds: float) -> float:
    """The factor, at most 1, that shortens every phase alike so that ``steps`` steps of
    ``step_seconds`` each take at most ``seconds``."""
    planned = sum(t * n for t, n in zip(step_seconds, steps))
    return min(1.0, max(0.0, seconds / planned))


def steps_in_budget(steps: int, planned: int, done: int, pace: float | None, left: float) -> int:
    """A phase's step count under a time budget with ``left`` seconds to go: ``steps`` until a pace
    (seconds per step) is measured, then as many of its ``planned`` steps as fit at that pace. The
    count may grow back: the first few steps of a phase are slow, and a fit made on them alone left
    7 % of a 12-minute budget unused."""
    if left <= 0:
        return done
    return steps if pace is None else min(planned, done + int(left / pace))
