"""How a subnet is run and timed: the runtime settings, declared once (the measuring code and the
command line both read them here)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from nas.errors import PoseNASError

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
MEASURES = "deployed/4"  # how figures are taken (a new method or graph, a new cache key): cheaper in-graph decoding
LATENCY_OF = ("network", "total")
REFERENCE_NETWORK = ("cpu", "litepose_xs")  # (space, preset): the network every measurement is timed against
MAX_PEOPLE = 30  # the decoder's candidates per joint (DecodeConfig.max_people)


def measured_for(settings: dict) -> str:
    """What figures taken with these settings time: the network, or the total for a stated crowd."""
    return f"total, {settings['people']} people" if settings.get("latency_of") == "total" else "network"


@dataclass(frozen=True)
class RuntimeSettings:
    """How a model is run and timed; part of every cache key."""
    backend: str = "onnxruntime"  # a runtime of ``nas.latency.runtimes.RUNTIMES``
    threads: int = 1  # intra-op threads (0: the runtime's default); one repeats best on a shared machine
    provider: str = "CPUExecutionProvider"
    optimization: str = "all"  # onnxruntime's graph optimization level
    warmup: int = 10
    repeats: int = 50
    latency_of: str = "total"  # what median_ms and p90_ms time: the total from image to people, or the network
    people: int = 10  # with latency_of total: the crowd that grouping (outside the graph) is timed on
    reference: bool = True  # onnxruntime: time against the reference network, scaled by its calibrated latency

    def __post_init__(self):
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise PoseNASError(f"optimization {self.optimization!r} unknown; use one of {list(OPTIMIZATION_LEVELS)}")
        if not (3 <= self.repeats <= 10_000 and 0 <= self.warmup <= 1_000 and 0 <= self.threads <= 256):
            raise PoseNASError(f"latency settings: repeats 3 to 10000, warmup 0 to 1000 and threads 0 to 256 are "
                               f"needed, got {self.repeats}, {self.warmup} and {self.threads}")
        if self.latency_of not in LATENCY_OF:
            raise PoseNASError(f"latency_of {self.latency_of!r} unknown; use one of {list(LATENCY_OF)}")
        if not 0 <= self.people <= MAX_PEOPLE:
            raise PoseNASError(f"--people {self.people}: give 0 to {MAX_PEOPLE}")

    @property
    def measures(self) -> str:
        return measured_for(asdict(self))

    def key(self) -> str:
        """The settings and what is measured: a cache never serves figures of another kind."""
        reference = list(REFERENCE_NETWORK) if self.reference else None
        return json.dumps({**asdict(self), "reference": reference, "measures": MEASURES}, sort_keys=True)
