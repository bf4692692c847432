"""Measured latency of a subnet on a device, cached by (device, runtime settings, arch).

The deployment latency is the static subnet exported to ONNX at its input resolution and timed in
an onnxruntime session: warm-up runs, then repeated single-image runs; the figures are the median,
the 90th percentile and the spread (p90 / p10). Weights do not change the time of these networks,
so a measurement needs the arch config only. ``torch`` times eager PyTorch for comparison: it is
not a deployment latency. ``RemoteBackend`` sends the ONNX model to ``posenas latency-server`` on
the target device.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from nas.errors import PoseNASError
from nas.latency.postprocess import time_grouping
from nas.latency.settings import RuntimeSettings
from nas.latency.timing import time_runs
from nas.subnet.onnx import INPUT, candidates_onnx, session, to_onnx
from search_spaces import arch_hash
from supernet.network import new_static


def device_fingerprint() -> dict:
    """What identifies the measuring device: CPU model, cores, OS, runtime versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "machine": platform.machine(), "system": platform.system(), "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers()}


def fingerprint_key(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def time_onnx(model: bytes, resolution: int, settings: RuntimeSettings) -> dict:
    sess = session(model, settings.threads, settings.optimization, settings.provider)
    x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
    return time_runs(lambda: sess.run(None, {INPUT: x}), settings.warmup, settings.repeats)


def time_torch(arch: dict, num_keypoints: int, settings: RuntimeSettings) -> dict:
    import torch

    net = new_static(arch, num_keypoints).eval()
    x = torch.randn(1, 3, arch["resolution"], arch["resolution"])
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        with torch.inference_mode():
            return time_runs(lambda: net(x), settings.warmup, settings.repeats)
    finally:
        torch.set_num_threads(threads)


def time_deployment(arch: dict, num_keypoints: int, settings: RuntimeSettings) -> dict:
    """A subnet's latency in onnxruntime: its network alone (``latency_of`` network, today's
    default), or the total from a letterboxed image to people: the exported model (network and
    in-graph decoding) plus grouping outside it for ``settings.people`` people, with the in-graph
    decoding also timed alone so that network and post-processing are reported apart."""
    r, multi = arch["resolution"], arch["head"]["multi_resolution"]
    if settings.latency_of == "network":
        network = time_onnx(to_onnx(new_static(arch, num_keypoints), r, decode=False), r, settings)
        return {**network, "network_ms": network["median_ms"]}
    deployed = time_onnx(to_onnx(new_static(arch, num_keypoints), r), r, settings)
    in_graph = time_candidates(num_keypoints, r, multi, settings)
    grouping = time_grouping(num_keypoints, r, multi, settings.people, settings.warmup, settings.repeats)
    return {**deployed, "median_ms": deployed["median_ms"] + grouping["median_ms"],
            "p90_ms": deployed["p90_ms"] + grouping["p90_ms"],
            "network_ms": max(deployed["median_ms"] - in_graph["median_ms"], 0.0),
            "postprocess_ms": in_graph["median_ms"] + grouping["median_ms"],
            "in_graph_decode_ms": in_graph["median_ms"], "grouping_ms": grouping["median_ms"],
            "people": settings.people}


@lru_cache(maxsize=64)
def time_candidates(num_keypoints: int, resolution: int, multi_resolution: bool, settings: RuntimeSettings) -> dict:
    """The in-graph decoding alone in onnxruntime (the same for every subnet of this shape)."""
    model = candidates_onnx(num_keypoints, resolution, multi_resolution)
    sess = session(model, settings.threads, settings.optimization, settings.provider)
    feeds = {i.name: np.random.default_rng(0).random(i.shape, dtype=np.float32) for i in sess.get_inputs()}
    return time_runs(lambda: sess.run(None, feeds), settings.warmup, settings.repeats)


TIMERS = {"onnxruntime": time_deployment, "torch": time_torch}  # by RuntimeSettings.backend (settings.BACKENDS)


class LocalBackend:
    """Measures on this machine."""

    def __init__(self, settings: RuntimeSettings = RuntimeSettings()):
        self.settings = settings
        self.fingerprint = device_fingerprint()

    def measure(self, arch: dict, num_keypoints: int = 17) -> dict:
        return TIMERS[self.settings.backend](arch, num_keypoints, self.settings)


class RemoteBackend:
    """Measures on the device that runs ``posenas latency-server`` at ``url``."""

    def __init__(self, url: str, settings: RuntimeSettings = RuntimeSettings(), timeout: float = 600):
        if settings.backend != "onnxruntime":
            raise PoseNASError("a latency server measures ONNX models: use the onnxruntime backend")
        if settings.latency_of != "network":
            raise PoseNASError("a latency server measures the network alone so far: use --latency-of network")
        self.url, self.settings, self.timeout = url.rstrip("/"), settings, timeout
        self.fingerprint = self._request("/fingerprint")

    def _request(self, path: str, body: bytes | None = None, query: dict | None = None) -> dict:
        url = self.url + path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise PoseNASError(f"latency server {self.url}: {e.code} {e.read().decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError) as e:
            raise PoseNASError(f"latency server {self.url} unreachable ({getattr(e, 'reason', e)})") from None

    def measure(self, arch: dict, num_keypoints: int = 17) -> dict:
        model = to_onnx(new_static(arch, num_keypoints), arch["resolution"], decode=False)
        s = self.settings
        return self._request("/measure", model, {"resolution": arch["resolution"], "threads": s.threads,
                                                 "optimization": s.optimization, "provider": s.provider,
                                                 "warmup": s.warmup, "repeats": s.repeats})


class LatencyCache:
    """A persistent table of measurements (SQLite): a config measured once on a device with given
    settings is never measured again, across runs and resumed searches."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS latency (device TEXT, settings TEXT, arch TEXT, "
                       "figures TEXT, measured_at REAL, PRIMARY KEY (device, settings, arch))")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get(self, device: str, settings: str, arch: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT figures FROM latency WHERE device=? AND settings=? AND arch=?",
                             (device, settings, arch)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, device: str, settings: str, arch: str, figures: dict) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?)",
                       (device, settings, arch, json.dumps(figures), time.time()))

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM latency").fetchone()[0]


class LatencyMeter:
    """A backend behind a cache: ``measure`` returns the figures and whether they were cached."""

    def __init__(self, backend: LocalBackend | RemoteBackend, cache: LatencyCache | None = None):
        self.backend, self.cache = backend, cache
        self.device = fingerprint_key(backend.fingerprint)

    def measure(self, arch: dict, num_keypoints: int = 17) -> dict:
        key = (self.device, self.backend.settings.key(), f"{arch_hash(arch)}-k{num_keypoints}")
        figures = self.cache.get(*key) if self.cache is not None else None
        if figures is not None:
            return {**figures, "cached": True}
        figures = self.backend.measure(arch, num_keypoints)
        if self.cache is not None:
            self.cache.put(*key, figures)
        return {**figures, "cached": False}

    def card_entry(self, arch: dict, num_keypoints: int = 17) -> dict:
        """What an export card records of a subnet's latency: the figures, the device, the settings."""
        figures = self.measure(arch, num_keypoints)
        return {"median_ms": figures["median_ms"], "p90_ms": figures["p90_ms"], "spread": figures["spread"],
                "device": self.backend.fingerprint, "runtime": asdict(self.backend.settings)}


def make_meter(settings: RuntimeSettings, url: str | None = None, cache: str | Path | None = None) -> LatencyMeter:
    backend = RemoteBackend(url, settings) if url else LocalBackend(settings)
    return LatencyMeter(backend, LatencyCache(cache) if cache else None)
