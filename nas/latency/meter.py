"""Measured latency of a subnet on a device, cached by (device, runtime settings, arch).

A backend measures: ``LocalBackend`` on this machine, in a runtime of ``nas.latency.runtimes``;
``RemoteBackend`` by sending the exported model to ``posenas latency-server`` on the target device.
Weights do not change the time of these networks, so a measurement needs the arch config only.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path

import onnxruntime as ort

from nas.errors import PoseNASError
from nas.latency.runtimes import export_for, runtime_of
from nas.latency.settings import RuntimeSettings
from nas.latency.stopwatch import Stopwatch
from search_spaces import arch_hash

FRESH_TIMEOUT_S = 900  # a fresh measurement of an int8 subnet quantizes it first


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


class LatencyBackend:
    """Where a subnet is measured: ``measure`` gives its figures on the device ``fingerprint``
    names, run and timed as ``settings`` say."""
    settings: RuntimeSettings
    fingerprint: dict

    def measure(self, arch: dict, num_keypoints: int = 17) -> dict:
        raise NotImplementedError

    def remeasure(self, arch: dict, num_keypoints: int = 17) -> dict:
        """``arch`` measured anew, by a process that holds nothing of this one's (the server's own)."""
        return self.measure(arch, num_keypoints)


class LocalBackend(LatencyBackend):
    """Measures on this machine, in the runtime its settings name."""

    def __init__(self, settings: RuntimeSettings = RuntimeSettings()):
        self.settings, self.runtime = settings, runtime_of(settings)
        self.fingerprint = {**device_fingerprint(), **self.runtime.versions()}
        self.watch = None

    def measure(self, arch: dict, num_keypoints: int = 17) -> dict:
        return self.runtime.measure(arch, num_keypoints, self.settings, self._stopwatch)

    def remeasure(self, arch: dict, num_keypoints: int = 17) -> dict:
        """``arch`` measured by a new Python process on this machine (``nas.latency.fresh``): what a user
        who loads the exported model sees, free of the state (warm caches, thread pools, allocations)
        of the process that searched."""
        root = str(Path(__file__).resolve().parents[2])  # the folder holding nas/, wherever this copy runs from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        request = json.dumps({"arch": arch, "num_keypoints": num_keypoints, "settings": asdict(self.settings)})
        try:
            done = subprocess.run([sys.executable, "-m", "nas.latency.fresh"], input=request, capture_output=True,
                                  text=True, env=env, timeout=FRESH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise PoseNASError(f"the fresh latency measurement ran over {FRESH_TIMEOUT_S} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise PoseNASError(f"the fresh latency measurement failed: {last}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _stopwatch(self) -> Stopwatch:
        if self.watch is None:  # calibrates the reference network on first use
            self.watch = Stopwatch(self.settings, fingerprint_key(self.fingerprint))
        return self.watch


class RemoteBackend(LatencyBackend):
    """Measures on the device that runs ``posenas latency-server`` at ``url``: the same
    ``Runtime.measure_model``, calibrated there. ``token``: the server's shared secret. Replies
    are checked before anything is cached from them."""

    def __init__(self, url: str, settings: RuntimeSettings = RuntimeSettings(), timeout: float = 600,
                 token: str | None = None):
        runtime = runtime_of(settings)
        if not runtime.deployment:
            raise PoseNASError(f"a latency server measures exported models: {runtime.label} does not run them")
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise PoseNASError(f"--url {url!r}: give http://host:port (or https://)")
        self.url, self.settings, self.timeout, self.token = url.rstrip("/"), settings, timeout, token
        self.fingerprint = checked_fingerprint(self._request("/fingerprint"), self.url)

    def _request(self, path: str, body: bytes | None = None, query: dict | None = None):
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers),
                                        timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace").splitlines()
            raise PoseNASError(f"latency server {self.url}: {e.code} {detail[0] if detail else e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise PoseNASError(f"latency server {self.url} unreachable ({getattr(e, 'reason', e)})") from None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            raise PoseNASError(f"latency server {self.url}: the reply to {path} is not JSON") from None

    def measure(self, arch: dict, num_keypoints: int = 17) -> dict:
        query = {**asdict(self.settings), "resolution": arch["resolution"],
                 "multi_resolution": arch["head"]["multi_resolution"], "keypoints": num_keypoints}
        model = export_for(arch, num_keypoints, self.settings.latency_of)
        return checked_figures(self._request("/measure", model, query),
                               self.settings, self.url)


def checked_fingerprint(reply, url: str) -> dict:
    if not (isinstance(reply, dict) and isinstance(reply.get("cpu"), str)
            and isinstance(reply.get("cores"), int) and reply["cores"] > 0):
        raise PoseNASError(f"latency server {url}: its fingerprint lacks the device's cpu and cores")
    return reply


def checked_figures(reply, settings: RuntimeSettings, url: str) -> dict:
    """A measurement's figures as a server sent them, if they are figures: the timings a total or
    a network measurement has, each a finite positive number."""
    needed = ("median_ms", "p90_ms", "network_ms") + (("postprocess_ms",) if settings.latency_of == "total" else ())
    if not isinstance(reply, dict):
        raise PoseNASError(f"latency server {url}: the measurement is not a JSON object")
    for name in needed:
        value = reply.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (name == "median_ms" and value == 0):
            raise PoseNASError(f"latency server {url}: {name} {value!r} is not a latency (a finite positive number)")
    return reply


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

    def __init__(self, backend: LatencyBackend, cache: LatencyCache | None = None):
        self.backend, self.cache = backend, cache
        self.device = fingerprint_key(backend.fingerprint)

    @property
    def settings(self) -> RuntimeSettings:
        return self.backend.settings

    def _key(self, arch: dict, num_keypoints: int) -> tuple[str, str, str]:
        return self.device, self.backend.settings.key(), f"{arch_hash(arch)}-k{num_keypoints}"

    def cached(self, arch: dict, num_keypoints: int = 17) -> dict | None:
        """The figures measured before on this device and target, if the cache holds them."""
        return self.cache.get(*self._key(arch, num_keypoints)) if self.cache is not None else None

    def measure(self, arch: dict, num_keypoints: int = 17) -> dict:
        figures = self.cached(arch, num_keypoints)
        if figures is not None:
            return {**figures, "cached": True}
        figures = self.backend.measure(arch, num_keypoints)
        if self.cache is not None:
            self.cache.put(*self._key(arch, num_keypoints), figures)
        return {**figures, "cached": False}

    def card_entry(self, arch: dict, num_keypoints: int = 17) -> dict:
        """What an export card records of a subnet's latency: the figures of a measurement in a
        fresh process (network and post-processing apart where the total was measured), beside them
        the median and p90 a search measured where the cache holds them, the device, the settings."""
        searched = self.cached(arch, num_keypoints)
        figures = self.backend.remeasure(arch, num_keypoints)
        return {**figures, **({"searched": {k: searched[k] for k in ("median_ms", "p90_ms")}} if searched else {}),
                "device": self.backend.fingerprint, "runtime": asdict(self.backend.settings),
                "target": self.backend.settings.target}


def make_meter(settings: RuntimeSettings, url: str | None = None, cache: str | Path | None = None,
               token: str | None = None) -> LatencyMeter:
    backend = RemoteBackend(url, settings, token=token) if url else LocalBackend(settings)
    return LatencyMeter(backend, LatencyCache(cache) if cache else None)
