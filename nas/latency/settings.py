"""How a subnet is run and timed: the latency backends and runtime settings, declared once (the
measuring code and the command line both read them here)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from nas.errors import PoseNASError

BACKENDS = ("onnxruntime", "torch")  # torch: eager PyTorch, for comparison only (not a deployment latency)
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
MEASURES = "deployed/1"  # total: the exported model with its in-graph decoding, plus grouping outside it
LATENCY_OF = ("network", "total")
MAX_PEOPLE = 30  # the decoder's candidates per joint (DecodeConfig.max_people)


@dataclass(frozen=True)
class RuntimeSettings:
    """How a model is run and timed; part of every cache key."""
    backend: str = "onnxruntime"
    threads: int = 2  # intra-op threads (0: the runtime's default)
    provider: str = "CPUExecutionProvider"
    optimization: str = "all"  # onnxruntime's graph optimization level
    warmup: int = 10
    repeats: int = 50
    latency_of: str = "network"  # what median_ms and p90_ms time: the network, or the total from image to people
    people: int = 10  # with latency_of total: the crowd that grouping (outside the graph) is timed on

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise PoseNASError(f"latency backend {self.backend!r} unknown; use one of {list(BACKENDS)}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise PoseNASError(f"optimization {self.optimization!r} unknown; use one of {list(OPTIMIZATION_LEVELS)}")
        if self.repeats < 3 or self.warmup < 0 or self.threads < 0:
            raise PoseNASError("latency settings: repeats >= 3, warmup >= 0 and threads >= 0 are needed")
        if self.latency_of not in LATENCY_OF:
            raise PoseNASError(f"latency_of {self.latency_of!r} unknown; use one of {list(LATENCY_OF)}")
        if not 0 <= self.people <= MAX_PEOPLE:
            raise PoseNASError(f"--people {self.people}: give 0 to {MAX_PEOPLE}")

    def key(self) -> str:
        """The settings and what is measured: a cache never serves figures of another kind."""
        return json.dumps({**asdict(self), "measures": MEASURES}, sort_keys=True)
