"""The deployment-target benchmark: every preset of ``cpu`` and ``default`` (and HigherHRNet-W32
at 256 px with its blocks as published and as MBConv) timed end to end with 10 people on each
target, onnxruntime and OpenVINO, fp32 and int8, at 1 and 2 threads (table: targets.csv, plot:
targets.png). Which subnet wins under a budget depends on the target: int8 pays for dense
convolutions and not for depthwise ones, and the runtimes differ by network.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from nas.io import write_text
from nas.plots import save, subplots

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")


def networks(quick: bool) -> dict[str, dict]:
    """Name -> arch config: the presets (``cpu`` alone at quick scale), and the HRNet blocks."""
    from search_spaces import SearchSpace

    spaces = ("cpu",) if quick else ("cpu", "default")
    archs = {f"{s} {p}": SearchSpace.load(s).resolve(p) for s in spaces for p in SearchSpace.load(s).preset_names()}
    if not quick:
        space = SearchSpace.load("default")
        hrnet = {**space.resolve("higherhrnet_w32"), "resolution": 256}
        mbconv = {**hrnet, "stages": [{**stage, "block": "mbconv"} for stage in hrnet["stages"]]}
        archs.update({"default higherhrnet_w32 at 256 px (bottleneck, basic)": space.canonical(hrnet),
                      "default higherhrnet_w32 at 256 px, MBConv blocks": space.canonical(mbconv)})
    return archs


def blocks(arch: dict) -> str:
    return ", ".join(dict.fromkeys(stage["block"] for stage in arch["stages"]))


def measure_targets(work: Path, quick: bool, threads: tuple[int, ...] = (1, 2)) -> pd.DataFrame:
    """One row per network and target, resumed from ``targets.csv`` (a row is kept as measured)."""
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.settings import RuntimeSettings
    from supernet.cost import arch_cost

    table = work / "targets.csv"
    rows = pd.read_csv(table).to_dict("records") if table.exists() else []
    done = {(r["network"], r["target"]) for r in rows}
    cache = LatencyCache(work / "targets-latency.sqlite")
    repeats = dict(warmup=2, repeats=5 if quick else 10)
    archs = networks(quick)
    todo = [(name, RuntimeSettings(backend=b, precision=p, threads=t, **repeats)) for name in archs
            for b in RUNTIMES for p in PRECISIONS for t in threads]
    for name, settings in tqdm([(n, s) for n, s in todo if (n, s.target) not in done], desc="timing targets"):
        arch = archs[name]
        figures = LatencyMeter(LocalBackend(settings), cache).measure(arch)
        rows.append({"network": name, "blocks": blocks(arch), "resolution": arch["resolution"],
                     "gmacs": arch_cost(arch).macs / 1e9, "target": settings.target, "runtime": settings.backend,
                     "precision": settings.precision, "threads": settings.threads, "total_ms": figures["median_ms"],
                     "network_ms": figures["network_ms"], "postprocess_ms": figures["postprocess_ms"]})
        write_text(table, pd.DataFrame(rows).to_csv(index=False))
    return pd.DataFrame(rows)


def ratios(table: pd.DataFrame, threads: int) -> pd.DataFrame:
    """Per network at ``threads``: onnxruntime fp32 end to end, and the issue's three ratios."""
    at = table[table["threads"] == threads].pivot_table(index="network", columns=["runtime", "precision"],
                                                        values="total_ms")
    return pd.DataFrame({"onnxruntime_fp32_ms": at["onnxruntime", "fp32"],
                         "onnxruntime_int8_over_fp32": at["onnxruntime", "int8"] / at["onnxruntime", "fp32"],
                         "openvino_fp32_over_onnxruntime_fp32": at["openvino", "fp32"] / at["onnxruntime", "fp32"],
                         "openvino_int8_over_fp32": at["openvino", "int8"] / at["openvino", "fp32"]})


def described(r) -> str:
    return (f"onnxruntime int8 / fp32 {r.onnxruntime_int8_over_fp32:.2f}x, OpenVINO fp32 / onnxruntime fp32 "
            f"{r.openvino_fp32_over_onnxruntime_fp32:.2f}x, OpenVINO int8 / fp32 {r.openvino_int8_over_fp32:.2f}x")


def plot_targets(table: pd.DataFrame, path: Path) -> None:
    """End-to-end latency per network and target (log scale), one bar per target."""
    pivot = table.pivot_table(index="network", columns="target", values="total_ms")
    pivot = pivot.loc[table.groupby("network")["gmacs"].first().sort_values().index]
    fig, ax = subplots(figsize=(12, 0.45 * len(pivot) + 2))
    height = 0.8 / len(pivot.columns)
    for i, target in enumerate(pivot.columns):
        ax.barh(np.arange(len(pivot)) + i * height, pivot[target], height, label=target)
    ax.set_yticks(np.arange(len(pivot)) + 0.4 - height / 2, pivot.index, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency with 10 people (ms, log scale)")
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.3)  # the networks' names
    save(fig, path)


FRONT_TARGETS = ("onnxruntime/fp32/1", "onnxruntime/int8/1", "openvino/fp32/1")


def cross_measured(fronts: dict[str, pd.DataFrame], objectives: dict) -> pd.DataFrame:
    """Every subnet of every target's front assessed on every target (``Objective.assess``: its
    latency measured there, and within the budget its AP as that target runs it; 0 over it)."""
    rows = []
    for front, table in fronts.items():
        subnets = list(zip(table["arch_hash"], table["arch"]))
        for arch_hash, arch in tqdm(subnets, desc=f"{front} front on every target"):
            for target, objective in objectives.items():
                attrs = objective.assess(json.loads(arch), measure=True)
                rows.append({"front": front, "arch_hash": arch_hash, "on": target, "latency_ms": attrs["latency_ms"],
                             "AP": attrs["AP"], "feasible": attrs["feasible"],
                             "fp32_twin_AP": attrs.get("inherited_AP", attrs["AP"]), "macs": attrs["macs"]})
    return pd.DataFrame(rows)


def best_on(table: pd.DataFrame, target: str, own: bool) -> pd.Series:
    """The best subnet within the budget on ``target`` of its own front, or of the other targets'."""
    rows = table[(table["on"] == target) & ((table["front"] == target) == own)]
    return rows.loc[rows["AP"].idxmax()]


def plot_fronts(fronts: dict[str, pd.DataFrame], merged: pd.DataFrame, budget_ms: float, path: Path) -> None:
    """Each target's verified front on its own target, and the front that may pick either precision."""
    fig, ax = subplots(figsize=(7, 4.5))
    for target, front in [*fronts.items(), ("onnxruntime, fp32 or int8 per subnet", merged)]:
        front = front.sort_values("latency_ms")
        ax.step(front["latency_ms"], front["AP"], where="post", marker="o", ms=4, label=target,
                ls="--" if target not in fronts else "-")
    ax.axvline(budget_ms, color="k", lw=0.8)
    ax.set_xlabel("end-to-end latency with 10 people on the front's own target (ms)")
    ax.set_ylabel("AP as the target runs it")
    ax.legend(fontsize=8)
    save(fig, path)
