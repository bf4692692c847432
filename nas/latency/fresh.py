"""A subnet measured in a process of its own: what a user who loads the exported model sees, free
of the state (warm caches, thread pools, allocations) of the process that searched. An export card
records this figure beside the search's.

``python -m nas.latency.fresh`` reads {"arch", "num_keypoints", "settings"} as JSON on stdin and
prints the figures as JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from nas.errors import PoseNASError
from nas.latency.settings import RuntimeSettings

TIMEOUT_S = 900  # an int8 subnet is quantized before it is timed


def measure_fresh(arch: dict, num_keypoints: int, settings: RuntimeSettings) -> dict:
    """``arch`` measured by a new Python process on this machine, as ``settings`` run it."""
    root = str(Path(__file__).resolve().parents[2])  # the folder holding nas/, wherever this copy runs from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    request = json.dumps({"arch": arch, "num_keypoints": num_keypoints, "settings": asdict(settings)})
    try:
        done = subprocess.run([sys.executable, "-m", "nas.latency.fresh"], input=request, capture_output=True,
                              text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PoseNASError(f"the fresh latency measurement ran over {TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise PoseNASError(f"the fresh latency measurement failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from nas.latency.meter import LocalBackend

    request = json.loads(sys.stdin.read())
    backend = LocalBackend(RuntimeSettings(**request["settings"]))
    print(json.dumps({**backend.measure(request["arch"], request["num_keypoints"]), "process": os.getpid()}))


if __name__ == "__main__":
    main()
