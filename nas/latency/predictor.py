"""A latency predictor fitted to measurements on one device: a non-negative linear model of the
network over the analytic per-kind cost features (``supernet.cost.FEATURES``), fitted for relative
error, plus, for end-to-end latency, a measured post-processing term per input resolution and head.

Per-kind weights play the part of nn-Meter's kernel lookup table: a depthwise MAC, a pointwise MAC
and a written activation each get their own price on this device, and ``ops`` prices the fixed
cost of launching an operator. Non-negative least squares on rows scaled by 1 / measurement
minimises the relative error, which is what "within +/-10 %" judges. Post-processing (in-graph
decoding and grouping) depends on the output maps' size and the crowd, not on the backbone, so it
is a lookup table measured once per resolution and head.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from nas.errors import PoseNASError
from nas.io import write_json
from nas.latency.settings import measured_for
from nas.plots import predicted_against_measured
from nas.pose.codecs import codec_of
from supernet.cost import FEATURES, arch_cost

# 2-core x86, 1 thread, total; 126 cpu subnets, both block types and heads
REFERENCE = Path(__file__).resolve().parent / "reference" / "cpu.json"
CV_FOLDS = 10  # the report's cross-validation: every subnet held out once
SCALE = {"ops": 1.0}  # features are scaled to comparable magnitudes before fitting


NAMES = ["intercept", "stride2_head", *FEATURES]


def feature_vector(arch: dict, num_keypoints: int = 17) -> np.ndarray:
    """Cost features, plus a fixed price for the stride-2 head: its memory-bound high-resolution
    upsampling costs more than its MACs and writes say (cross-validated: 69 % -> 75 % within 10 %)."""
    f = arch_cost(arch, num_keypoints).features
    return np.array([1.0, float(arch["head"]["multi_resolution"])] + [f[name] / SCALE.get(name, 1e6)
                                                                     for name in FEATURES])


@dataclass
class LatencyPredictor:
    coefficients: list[float]  # the network's prices, one per NAMES
    device: dict
    settings: dict  # the RuntimeSettings measured with (latency_of, people: what ``predict`` times)
    num_keypoints: int = 17
    postprocess_ms: dict[str, float] = field(default_factory=dict)  # postprocess_key -> ms; empty: network only
    p90_over_median: float = 1.0  # the slow tail of a run on this device: the median ratio over its measurements
    overhead_ms: dict[str, float] = field(default_factory=dict)  # input size -> ms the network pays beyond its prices

    @classmethod
    def fit(cls, archs: list[dict], network_ms: list[float], device: dict, settings: dict, num_keypoints: int = 17,
            postprocess_ms: dict[str, float] | None = None, p90_over_median: float = 1.0) -> "LatencyPredictor":
        x = np.stack([feature_vector(a, num_keypoints) for a in archs])
        y = np.asarray(network_ms, dtype=float)
        coef, _ = nnls(x / y[:, None], np.ones(len(y)))
        return cls(coef.tolist(), device, settings, num_keypoints, dict(postprocess_ms or {}), p90_over_median)

    def network(self, arch: dict) -> float:
        priced = float(feature_vector(arch, self.num_keypoints) @ np.asarray(self.coefficients))
        return priced + self.overhead_ms.get(str(arch["resolution"]), 0.0)

    def predict(self, arch: dict, figure: str = "median_ms") -> float:
        """The latency its settings measure: the network, plus post-processing for the total; its
        median, or (``p90_ms``) the run nine in ten beat."""
        tail = self.p90_over_median if figure == "p90_ms" else 1.0
        key = codec_of(arch).postprocess_key(arch)
        if measured_for(self.settings) == "network" or key is None:  # nothing runs after the network
            return self.network(arch) * tail
        if key not in self.postprocess_ms:
            raise PoseNASError(f"latency predictor: no post-processing measured for {key} "
                               f"(it has {sorted(self.postprocess_ms)}); rebuild it for this space")
        return (self.network(arch) + self.postprocess_ms[key]) * tail

    def save(self, path: str | Path) -> None:
        write_json(path, {"features": NAMES, "coefficients": self.coefficients, "postprocess_ms": self.postprocess_ms,
                          "p90_over_median": self.p90_over_median, "overhead_ms": self.overhead_ms,
                          "device": self.device, "settings": self.settings, "num_keypoints": self.num_keypoints},
                   indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "LatencyPredictor":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d["features"] != NAMES:
                raise PoseNASError(f"{path}: built for other features {d['features']}; rebuild it")
            tail = d.get("p90_over_median", 1.0)
            if isinstance(tail, bool) or not isinstance(tail, (int, float)) or not 1 <= tail < 100:
                raise PoseNASError(f"{path}: p90_over_median {tail!r} is not a ratio of p90 to median latency (1-100)")
            overhead = d.get("overhead_ms", {})
            if not isinstance(overhead, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                         and abs(v) < 1e4 for v in overhead.values()):
                raise PoseNASError(f"{path}: overhead_ms must map input sizes to milliseconds")
            return cls(d["coefficients"], d["device"], d["settings"], d["num_keypoints"], d.get("postprocess_ms", {}),
                       float(tail), {str(k): float(v) for k, v in overhead.items()})
        except FileNotFoundError:
            raise PoseNASError(f"latency predictor not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PoseNASError(f"{path}: not a latency predictor ({type(e).__name__}: {e})") from None


def postprocess_terms(meter, space, num_keypoints: int = 17, progress: bool = True) -> dict[str, float]:
    """The post-processing of every resolution and head of ``space`` on ``meter``'s device, each
    measured on the smallest subnet (nothing for a network-only meter)."""
    from tqdm import tqdm

    if meter.settings.latency_of != "total":
        return {}
    archs = {key: with_case(space, space.min(), case) for key, case in postprocess_cases(space).items()}
    return {key: meter.measure(a, num_keypoints)["postprocess_ms"]
            for key, a in tqdm(archs.items(), desc="post-processing", disable=not progress)}


def postprocess_cases(space) -> dict[str, tuple]:
    """Every post-processing case of ``space``: its key -> (resolution, multi_resolution, head type)."""
    cases = {}
    for resolution in space.choices("resolution"):
        for multi in space.choices("head.multi_resolution"):
            for head in space.choices("head.type"):
                key = case_of(with_case(space, space.min(), (resolution, multi, head)))
                if key is not None:
                    cases.setdefault(key, (resolution, multi, head))
    return cases


def with_case(space, arch: dict, case: tuple) -> dict:
    """``arch`` at a post-processing case's resolution, output stride and head."""
    arch = {**arch, "head": dict(arch["head"])}
    arch["resolution"], arch["head"]["multi_resolution"], arch["head"]["type"] = case
    return space.canonical(arch)


def case_of(arch: dict) -> str | None:
    """The post-processing case ``arch`` runs (None: nothing runs after its network)."""
    return codec_of(arch).postprocess_key(arch)


def tail_ratio(figures: list[dict]) -> float:
    """How much slower than the median the run nine in ten beat is, typically, on this device."""
    return float(np.median([f["p90_ms"] / f["median_ms"] for f in figures]))


def within(predicted: np.ndarray, measured: np.ndarray, tolerance: float = 0.10) -> float:
    """Share of predictions within +/- ``tolerance`` of the measurement."""
    return float(np.mean(np.abs(np.asarray(predicted) / np.asarray(measured) - 1) <= tolerance))


def build_predictor(space, backend, out: str | Path, samples: int = 120, holdout: float = 0.25, passes: int = 3,
                    seed: int = 0, progress: bool = True) -> dict:
    """Measure random subnets (and the presets) in ``passes`` separate passes over the whole set,
    each measurement a fresh session; judge every subnet by the median over passes. Fit the network
    on most (post-processing, for the total, is measured per resolution and head), report accuracy
    on the held-out rest beside the device's repeatability (pass 2 against pass 1). Writes
    predictor.json, report.json, measurements.csv and predicted_vs_measured.png."""
    import random

    import pandas as pd
    from tqdm import tqdm

    from nas.io import write_text
    from search_spaces import arch_hash

    out = Path(out)
    rng = random.Random(seed)
    archs, seen = [], set()
    for arch in [space.preset(p) for p in space.preset_names()] + [space.random(rng) for _ in range(samples)]:
        arch = space.canonical(arch)
        if arch_hash(arch) not in seen:
            seen.add(arch_hash(arch))
            archs.append(arch)
    figures = [[backend.measure(a) for a in tqdm(archs, desc=f"pass {p + 1}/{passes}", disable=not progress)]
               for p in range(passes)]
    runs = np.array([[f["median_ms"] for f in run] for run in figures])
    measured = np.median(runs, axis=0)
    network = np.median([[f["network_ms"] for f in run] for run in figures], axis=0)
    order = np.random.default_rng(seed).permutation(len(archs))
    test = sorted(order[:int(len(archs) * holdout)].tolist())
    train = sorted(set(range(len(archs))) - set(test))
    settings, terms = asdict(backend.settings), postprocess_terms(backend, space, progress=progress)

    def fitted(rows) -> LatencyPredictor:
        return LatencyPredictor.fit([archs[i] for i in rows], network[rows], backend.fingerprint, settings,
                                    postprocess_ms=terms, p90_over_median=tail_ratio(sum(figures, [])))

    predictor = fitted(train)
    predicted = np.array([predictor.predict(a) for a in archs])
    crossed = np.empty(len(archs))  # every subnet predicted by a model fitted without it
    for fold in np.array_split(order, CV_FOLDS):
        model = fitted(np.setdiff1d(order, fold))
        crossed[fold] = [model.predict(archs[i]) for i in fold]
    report = {
        "device": backend.fingerprint, "settings": settings, "latency_of": measured_for(settings), "passes": passes,
        "subnets": len(archs), "fitted_on": len(train), "held_out": len(test),
        "within_10pct": within(predicted[test], measured[test]),
        "within_5pct": within(predicted[test], measured[test], 0.05),
        "mean_abs_rel_error": float(np.mean(np.abs(predicted[test] / measured[test] - 1))),
        "cross_validated_within_10pct": within(crossed, measured), "cross_validation_folds": CV_FOLDS,
        "repeatability_within_10pct": within(runs[1], runs[0]) if passes > 1 else None,
        "latency_range_ms": [float(measured.min()), float(measured.max())],
    }
    predictor.save(out / "predictor.json")
    write_json(out / "report.json", report, indent=1)
    table = pd.DataFrame({"arch_hash": [arch_hash(a) for a in archs], "resolution": [a["resolution"] for a in archs],
                          "macs": [arch_cost(a).macs for a in archs], "measured_ms": measured, "network_ms": network,
                          **{f"pass{p + 1}_ms": runs[p] for p in range(passes)}, "predicted_ms": predicted,
                          "split": ["held-out" if i in set(test) else "fit" for i in range(len(archs))]})
    write_text(out / "measurements.csv", table.to_csv(index=False))
    repeat = report["repeatability_within_10pct"]
    predicted_against_measured(table, "measured_ms", "predicted_ms", out / "predicted_vs_measured.png",
                               f"measured {report['latency_of']} latency (ms, median of {report['passes']} passes)",
                               "predicted latency (ms)", f"held-out within 10 %: {report['within_10pct']:.0%}"
                               + (f" (device repeatability {repeat:.0%})" if repeat is not None else ""), band=0.10)
    return report
