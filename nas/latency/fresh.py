"""``python -m nas.latency.fresh``: a subnet measured in a process of its own (``LocalBackend.remeasure``
starts it): reads {"arch", "num_keypoints", "settings"} as JSON on stdin, prints the figures as JSON."""
from __future__ import annotations

import json
import os
import sys

from nas.latency.meter import LocalBackend
from nas.latency.settings import RuntimeSettings


def main() -> None:
    request = json.loads(sys.stdin.read())
    backend = LocalBackend(RuntimeSettings(**request["settings"]))
    print(json.dumps({**backend.measure(request["arch"], request["num_keypoints"]), "process": os.getpid()}))


if __name__ == "__main__":
    main()
