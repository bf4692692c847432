"""What one search job is: the supernet, the held-out data, the budgets, the strategy and the
storage; built and checked here for the command line and the pipeline alike."""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from nas.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, typed
from nas.errors import PoseNASError
from nas.search.strategies import STRATEGIES

LATENCY_STATS = {"median": "median_ms", "p90": "p90_ms"}  # what a latency budget bounds -> the measured figure


@dataclass
class SearchConfig:
    supernet: str
    val_ann: str
    val_images: str
    latency_budget_ms: float
    out: str
    macs_budget: float | str | None = None  # a number of MACs, or text such as 800M or 1.2G
    trials: int = 40
    sampler: str = "nsga2"
    storage: str | None = None  # default: sqlite:///OUT/study.db
    study: str = "posenas"
    eval_images: int | None = 100
    calib_data: str | None = None  # BN calibration set folder (default: the supernet's training set)
    calib_images: int = 64
    flip_test: bool = False
    predictor: str | None = None
    seed: int | None = None
    population: int = 10  # NSGA-II generation size: its first generation is random, so keep it well below trials
    timeout_min: float | None = None  # stop adding trials after this long (the study keeps what finished)
    accuracy_predictor: str | None = None  # predictor.json: search on predicted AP, then verify the front for real
    predicted_trials: int = 2000  # trials of a search on predicted AP
    verify: int = 8  # latency bands whose best predicted subnet is measured and evaluated for real
    refine: int = 16  # then at most this many mutations of the verified winners, until the front stops moving
    refit: bool = True  # the accuracy predictor refitted first on earlier searches' evaluations of this supernet
    latency_stat: str = "median"  # the budget bounds the median run, or the p90 (nine runs in ten)

    RANGES = {"latency_budget_ms": POSITIVE, "trials": AT_LEAST_ONE, "eval_images": AT_LEAST_ONE,
              "calib_images": AT_LEAST_ONE, "seed": Range(0, 2 ** 32 - 1), "population": Range(2),
              "timeout_min": POSITIVE, "predicted_trials": AT_LEAST_ONE, "verify": AT_LEAST_ONE,
              "refine": NON_NEGATIVE}

    def __post_init__(self):  # numbers are checked against RANGES where they are parsed (``typed``)
        self.macs_budget = parse_macs(self.macs_budget)
        if self.latency_stat not in LATENCY_STATS:
            raise PoseNASError(f"latency_stat {self.latency_stat!r} unknown; use one of {list(LATENCY_STATS)}")
        if self.sampler not in STRATEGIES:
            raise PoseNASError(f"sampler {self.sampler!r} unknown; use one of {list(STRATEGIES)}")
        if self.macs_budget is not None and not 0 < self.macs_budget < math.inf:
            raise PoseNASError(f"macs_budget {self.macs_budget!r}: give a positive number of MACs")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "SearchConfig":
        return typed(cls, d, source)

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def over_budgets(self, macs: float, latency_ms: float) -> dict[str, float]:
        """How far a subnet is over each budget, as Optuna's constraints (at most 0: within);
        a subnet is feasible when every value is."""
        return {"macs": macs - self.macs_budget if self.macs_budget else -1.0,
                "latency_ms": latency_ms - self.latency_budget_ms}

    @property
    def latency_figure(self) -> str:
        """The measured figure the latency budget bounds."""
        return LATENCY_STATS[self.latency_stat]

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"


def parse_macs(text: str | float | None) -> float | None:
    """'800M', '1.2G', '2e9' or a number of MACs."""
    if text is None or isinstance(text, (int, float)):
        return text
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(text[-1:].upper())
    try:
        return float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        raise PoseNASError(f"--macs-budget {text!r}: give a number of MACs such as 800M or 1.2G") from None
