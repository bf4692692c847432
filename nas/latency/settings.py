"""How a subnet is run and timed: the latency backends and runtime settings, declared once (the
measuring code and the command line both read them here)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from nas.errors import PoseNASError

BACKENDS = ("onnxruntime", "torch")  # torch: eager PyTorch, for comparison only (not a deployment latency)
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class RuntimeSettings:
    """How a model is run and timed; part of every cache key."""
    backend: str = "onnxruntime"
    threads: int = 2  # intra-op threads (0: the runtime's default)
    provider: str = "CPUExecutionProvider"
    optimization: str = "all"  # onnxruntime's graph optimization level
    warmup: int = 10
    repeats: int = 50

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise PoseNASError(f"latency backend {self.backend!r} unknown; use one of {list(BACKENDS)}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise PoseNASError(f"optimization {self.optimization!r} unknown; use one of {list(OPTIMIZATION_LEVELS)}")
        if self.repeats < 3 or self.warmup < 0 or self.threads < 0:
            raise PoseNASError("latency settings: repeats >= 3, warmup >= 0 and threads >= 0 are needed")

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
