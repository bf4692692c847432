"""Timing that repeats on a shared, drifting machine: every call timed against a fixed reference
network in the same rounds, and scaled by the reference's calibrated latency on this device.

On a machine that other processes share, clock speed and contention move a measurement by tens
of percent within minutes; they move the reference alike. Measured on two cores with one kept
busy, re-measuring 24 subnets in a fresh process minutes later landed within
+/-10 % for 29 % of them timed alone and for 96 % timed relative to the reference. The reference's latency is
calibrated once per device and runtime settings (the fastest of many short rounds, the machine at
its quietest) and kept in the user's cache, so that every process, run and search on this device
scales by the same figure. Each measurement records the machine's load and the slowdown the
reference saw. Beyond a slowdown of ``BUSY`` the scaled figure strays: with both cores loaded by
other processes, every subnet measured below 1.6x stayed within +/-10 % of its quiet figure, 7 of
8 at 1.6-2x. So such a measurement is taken again after a pause, up to ``ATTEMPTS`` times, and the
least slowed one kept; a machine busy throughout gets a warning.
"""
from __future__ import annotations

import json
import os
import sys
import time
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from nas.io import cache_folder, read_json, write_json
from nas.latency.settings import REFERENCE_NETWORK, RuntimeSettings
from nas.latency.timing import run_times, summary, time_runs
from nas.subnet.onnx import runner, to_onnx
from search_spaces import SearchSpace
from supernet.network import new_static

ROUND = 5  # runs of the measured call, then of the reference, per round
CALIBRATION_ROUNDS = 20
BUSY = 1.5  # the reference this much slower than calibrated: the machine is busy
ATTEMPTS = 3  # measurements of one call on a busy machine, the least slowed kept
PAUSE_S = 1.0  # between them: a burst of other work may pass
CALIBRATIONS = "latency-reference.json"  # in the user's cache folder
NOTHING = {"median_ms": 0.0, "p90_ms": 0.0}  # the timing of a step that does not run


@lru_cache(maxsize=1)
def reference_model() -> bytes:
    """The reference network's ONNX model (weights do not change its time)."""
    arch = SearchSpace.load(REFERENCE_NETWORK[0]).resolve(REFERENCE_NETWORK[1])
    torch.manual_seed(0)
    return to_onnx(new_static(arch, 17), arch["resolution"], decode=False)


def calibration_key(settings: RuntimeSettings, device: str) -> str:
    """What the reference's latency depends on: the device and how onnxruntime runs."""
    return json.dumps({"device": device, "reference": list(REFERENCE_NETWORK), "threads": settings.threads,
                       "optimization": settings.optimization, "provider": settings.provider}, sort_keys=True)


def calibrate(run: Callable[[], object], warmup: int) -> float:
    """The reference's latency on this device: the fastest median of many short rounds, taken
    when the machine was quietest."""
    for _ in range(warmup):
        run()
    return min(float(np.median(run_times(run, 2 * ROUND))) for _ in range(CALIBRATION_ROUNDS))


class Stopwatch:
    """Times calls on this device: alone, or (``settings.reference``) interleaved with the
    reference network and scaled by its calibrated latency, stored under ``folder``."""

    def __init__(self, settings: RuntimeSettings, device: str, folder=None, clock=time.perf_counter,
                 pause=time.sleep):
        """``clock`` (seconds) times the runs and ``pause`` waits between attempts: a test injects both."""
        self.settings, self.clock, self.pause = settings, clock, pause
        self.reference = (runner(reference_model(), settings.threads, settings.optimization, settings.provider)
                          if settings.reference else None)
        self.reference_ms = None
        if self.reference is not None:
            self.reference_ms = self._calibrated(device, folder)
        self.warned, self.timed = False, {}

    def _calibrated(self, device: str, folder) -> float:
        """The stored calibration of this device and settings, made on first use (delete the
        file to calibrate again, after a change of hardware, say)."""
        path, key = os.path.join(folder or cache_folder(), CALIBRATIONS), calibration_key(self.settings, device)
        table = read_json(path, "latency calibration") if os.path.exists(path) else {}
        if key not in table:
            table[key] = {"reference_ms": calibrate(self.reference, self.settings.warmup), "measured_at": time.time(),
                          "load": os.getloadavg()[0]}
            write_json(path, table, indent=1)
        return float(table[key]["reference_ms"])

    def time(self, run: Callable[[], object]) -> dict:
        """The latency of ``run`` in milliseconds with its p90 and spread; against the reference,
        also its raw median, the reference's slowdown and the machine's load.

        Against the reference, each round's runs are scaled by the reference's calibrated latency
        over its fastest run beside them, and ``median_ms`` is the median of the rounds' fastest
        scaled runs: of the estimators compared on the same recordings, the
        one that repeats best across fresh processes, and alike at 5 or 20 rounds."""
        s = self.settings
        if self.reference is None:
            return {**time_runs(run, s.warmup, s.repeats), "load": os.getloadavg()[0]}
        for _ in range(s.warmup):
            run()
            self.reference()
        attempts = [self._against_reference(run)]
        while attempts[-1]["slowdown"] > BUSY and len(attempts) < ATTEMPTS:
            self.pause(PAUSE_S)
            attempts.append(self._against_reference(run))
        best = min(attempts, key=lambda a: a["slowdown"])
        self._warn(best["slowdown"])
        return {**best, "attempts": len(attempts)}

    def _against_reference(self, run: Callable[[], object]) -> dict:
        s, clock = self.settings, self.clock
        rounds, raw, slowdowns = [], [], []
        for _ in range(max(1, s.repeats // ROUND)):
            own, reference = run_times(run, ROUND, clock), run_times(self.reference, ROUND, clock)
            rounds.append([t * self.reference_ms / min(reference) for t in own])
            slowdowns.append(float(np.median(reference)) / self.reference_ms)
            raw += own
        return {**summary([t for r in rounds for t in r]), "median_ms": float(np.median([min(r) for r in rounds])),
                "raw_median_ms": float(np.median(raw)), "slowdown": float(np.median(slowdowns)),
                "load": os.getloadavg()[0]}

    def once(self, key, make_run: Callable[[], Callable[[], object] | None]) -> dict:
        """``time`` of a call that many measurements share (the decoding of one shape), timed once
        in this process; zero where ``make_run`` gives no call (a step the head does not have)."""
        if key not in self.timed:
            run = make_run()
            self.timed[key] = NOTHING if run is None else self.time(run)
        return self.timed[key]

    def _warn(self, slowdown: float) -> None:
        if slowdown > BUSY and not self.warned:
            self.warned = True
            print(f"warning: the machine is busy (the reference network runs {slowdown:.1f}x slower than calibrated, "
                  f"load {os.getloadavg()[0]:.1f}); latencies are scaled by it, but re-measure on a quiet machine "
                  f"for the best figures", file=sys.stderr)
