"""The latency model's transfer to other targets: the shipped model (fitted on the developers'
machine, onnxruntime fp32 on one thread) moved to each target of this machine by K designed
measurements, judged on held-out random subnets measured there, end to end with 10 people
(table: latency-transfer.csv, plot: latency-transfer.png). The common factor of the same anchors
stands beside it: what a one-factor adaptation gets.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from nas.io import write_text
from nas.plots import save, subplots

TRANSFER_TARGETS = ("onnxruntime/fp32/1", "openvino/fp32/1", "onnxruntime/int8/1", "onnxruntime/fp32/2")
ANCHOR_COUNTS = (3, 10, 20)
HELD_OUT = 50
HELD_OUT_SEED = 7919  # a seed nothing else draws subnets with


def held_out_subnets(space, count: int = HELD_OUT) -> list[dict]:
    import random

    rng = random.Random(HELD_OUT_SEED)
    return [space.canonical(space.random(rng)) for _ in range(count)]


def transfer(space, target: str, work: Path, held_out: list[dict]) -> pd.DataFrame:
    """One target: its anchors and held-out subnets measured (each once, in a cache of the
    benchmark's own), then the adapted model's error on the held-out ones at each K."""
    from nas.latency.adaptation import adapt, common_factor, design_anchors, kind_terms
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.predictor import REFERENCE, LatencyPredictor, postprocess_cases
    from nas.latency.settings import RuntimeSettings, parse_target, target_folder_name

    reference = LatencyPredictor.load(REFERENCE)
    meter = LatencyMeter(LocalBackend(RuntimeSettings(**parse_target(target))),
                         LatencyCache(work / f"transfer-{target_folder_name(target)}.sqlite"))
    anchors = design_anchors(space, reference, max(ANCHOR_COUNTS))
    seconds, figures = [], []
    for arch in tqdm(anchors, desc=f"{target} anchors"):
        start = time.monotonic()
        figures.append(meter.measure(arch, reference.num_keypoints))
        seconds.append(time.monotonic() - start)  # a cached anchor took ~0 s: a fresh cache times them all
    measured = np.array([meter.measure(a, reference.num_keypoints)["median_ms"]
                         for a in tqdm(held_out, desc=f"{target} held out")])
    cases = list(postprocess_cases(space))
    rows = []
    for count in ANCHOR_COUNTS:
        model = adapt(reference, anchors[:count], [f["network_ms"] for f in figures[:count]],
                      [f["postprocess_ms"] for f in figures[:count]], cases, meter.backend.fingerprint,
                      asdict(meter.settings))
        common = common_factor(np.stack([kind_terms(reference, a) for a in anchors[:count]]),
                               np.array([f["network_ms"] for f in figures[:count]]))

        def one_factor(arch: dict) -> float:  # the same post-processing terms
            return model.predict(arch) - model.network(arch) + common * reference.network(arch)
        for how, predict in (("per kind", model.predict), ("common factor", one_factor)):
            errors = np.array([predict(a) for a in held_out]) / measured - 1
            rows.append({"target": target, "anchors": count, "adaptation": how,
                         "within_10pct": float(np.mean(np.abs(errors) <= 0.10)),
                         "median_error": float(np.median(errors)),
                         "worst_error": float(errors[np.argmax(np.abs(errors))]),
                         "anchor_seconds": float(sum(seconds[:count])), "held_out": len(held_out),
                         "ridge": model.settings["adaptation"]["ridge"] if how == "per kind" else None,
                         **({f"scale_{k}": v for k, v in model.settings["adaptation"]["scales"].items()}
                            if how == "per kind" else {})})
    return pd.DataFrame(rows)


def transfer_table(space, work: Path, targets: tuple[str, ...] = TRANSFER_TARGETS) -> pd.DataFrame:
    """Every target's rows, resumed from ``latency-transfer.csv`` per target."""
    path = work / "latency-transfer.csv"
    table = pd.read_csv(path) if path.exists() else pd.DataFrame()
    held_out = held_out_subnets(space)
    for target in targets:
        if not table.empty and target in set(table["target"]):
            continue
        table = pd.concat([table, transfer(space, target, work, held_out)], ignore_index=True)
        write_text(path, table.to_csv(index=False))
    return table


def plot_transfer(table: pd.DataFrame, path: Path) -> None:
    fig, ax = subplots(figsize=(7, 4))
    for (target, how), rows in table.groupby(["target", "adaptation"], sort=False):
        ax.plot(rows["anchors"], 100 * rows["within_10pct"], marker="o" if how == "per kind" else "x",
                linestyle="-" if how == "per kind" else ":", label=f"{target}, {how}")
    ax.axhline(95, color="grey", linewidth=0.8)
    ax.set_xlabel("subnets measured on the target (K)")
    ax.set_ylabel("held-out subnets within +/-10 % (%)")
    ax.set_xticks(list(ANCHOR_COUNTS))
    ax.legend(fontsize=7)
    save(fig, path)
