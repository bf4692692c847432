"""How a subnet is run and timed: the runtime settings, declared once (the measuring code and the
command line both read them here). Their deployment target, ``RUNTIME/PRECISION/THREADS`` (say
``onnxruntime/int8/1`` or ``openvino/fp32/2``), is what a user names with ``--target`` or a run
config's ``latency: {target: ...}``; every latency figure, cache and model is keyed by it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from nas.errors import PoseNASError
from nas.subnet.precision import PRECISIONS

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
MEASURES = "deployed/4"  # how figures are taken (a new method or graph, a new cache key): cheaper in-graph decoding
LATENCY_OF = ("network", "total")
REFERENCE_NETWORK = ("cpu", "litepose_xs")  # (space, preset): the network every measurement is timed against
MAX_TARGETS = 4  # a run config's targets the front may choose among: each is a search of its own
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
    precision: str = "fp32"  # a precision of ``nas.subnet.precision.PRECISIONS``
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
        if self.precision not in PRECISIONS:
            raise PoseNASError(f"precision {self.precision!r} unknown; use one of {list(PRECISIONS)}")
        if self.latency_of not in LATENCY_OF:
            raise PoseNASError(f"latency_of {self.latency_of!r} unknown; use one of {list(LATENCY_OF)}")
        if not 0 <= self.people <= MAX_PEOPLE:
            raise PoseNASError(f"--people {self.people}: give 0 to {MAX_PEOPLE}")

    @property
    def measures(self) -> str:
        return measured_for(asdict(self))

    @property
    def target(self) -> str:
        """RUNTIME/PRECISION/THREADS, and /PROVIDER where it is not the default."""
        provider = "" if self.provider == DEFAULT.provider else f"/{self.provider}"
        return f"{self.backend}/{self.precision}/{self.threads}{provider}"

    @classmethod
    def of(cls, fields: dict, where: str) -> "RuntimeSettings":
        """Settings from a config section or flags, its ``target`` read as the fields it names."""
        from nas.config import typed

        fields = dict(fields)
        if fields.get("target") is not None:
            fields.update(parse_target(fields["target"], f"{where}: target"))
        fields.pop("target", None)
        return typed(cls, fields, where)

    @classmethod
    def each_of(cls, fields: dict, where: str) -> list["RuntimeSettings"]:
        """The settings of every target a run config names: ``target`` is one, or a list of targets
        the user may deploy on (the search's front then picks one per subnet)."""
        targets = fields.get("target")
        if not isinstance(targets, list):
            return [cls.of(fields, where)]
        if not 1 <= len(targets) <= MAX_TARGETS or len(set(map(str, targets))) != len(targets):
            raise PoseNASError(f"{where}: target: give one target or a list of 1 to {MAX_TARGETS} different ones, "
                               f"got {targets!r}")
        return [cls.of({**fields, "target": target}, where) for target in targets]

    def key(self) -> str:
        """The settings and what is measured: a cache never serves figures of another kind."""
        reference = list(REFERENCE_NETWORK) if self.reference else None
        return json.dumps({**asdict(self), "reference": reference, "measures": MEASURES,
                           "recipe": PRECISIONS[self.precision].recipe}, sort_keys=True)


DEFAULT = RuntimeSettings()


def parse_target(text, where: str = "--target") -> dict:
    """``RUNTIME/PRECISION/THREADS[/PROVIDER]`` as the settings' fields (checked where they are)."""
    parts = text.split("/") if isinstance(text, str) else []
    if len(parts) not in (3, 4) or not parts[2].isdigit() or not all(parts):
        raise PoseNASError(f"{where} {text!r}: give RUNTIME/PRECISION/THREADS, e.g. onnxruntime/int8/1 or "
                           f"openvino/fp32/2")
    fields = {"backend": parts[0], "precision": parts[1], "threads": int(parts[2])}
    return {**fields, "provider": parts[3]} if len(parts) == 4 else fields


def target_folder_name(target: str) -> str:
    """A target as a file or folder name: ``onnxruntime/int8/1`` -> ``onnxruntime-int8-1``."""
    return target.replace("/", "-")


def target_of(settings: dict) -> str:
    """The target of settings a latency model or card recorded (before precision was kept: fp32)."""
    return RuntimeSettings(**{f: settings[f] for f in ("backend", "threads", "provider", "precision")
                              if f in settings}).target
