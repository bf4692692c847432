"""The folder of one `posenas run`, laid out once: every stage and the report find their files here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nas.latency.settings import target_folder_name
from nas.train.finetune import RECORD
from nas.train.supernet import CHECKPOINT

FINETUNE = "finetune"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def data(self, split: str) -> Path:
        """The set folder (annotations.json + images/) of ``split``: train or val."""
        return self.root / "data" / split

    @property
    def supernet(self) -> Path:
        return self.root / "supernet" / CHECKPOINT

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def pareto(self) -> Path:
        return self.search / "pareto.json"

    @property
    def baselines(self) -> Path:
        """preset, AP, latency_ms, macs, params, arch_hash of each preset with inherited weights."""
        return self.root / "baselines.csv"

    def winner(self, rank: int, arch_hash: str) -> Path:
        """The finetuning run (and export/) of the ``rank``-th best Pareto subnet."""
        return self.root / FINETUNE / f"{rank}-{arch_hash}"

    def winners(self) -> list[Path]:
        """Every finetuned winner's folder that holds a finished record, in rank order."""
        return sorted(p.parent for p in (self.root / FINETUNE).glob(f"*/{RECORD}"))

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"

    def latency_predictor(self, target: str | None = None) -> Path:
        """The latency model adapted to this machine (a search on predictions reads it); ``target``'s
        where a run searches several."""
        return self.root / f"latency-predictor{'-' + target_folder_name(target) if target else ''}.json"

    @property
    def latency_cache(self) -> Path:
        return self.root / "latency-cache.sqlite"

    @property
    def pareto_plot(self) -> Path:
        return self.root / "pareto.png"

    def summary(self, suffix: str = "md") -> Path:
        return self.root / f"summary.{suffix}"
