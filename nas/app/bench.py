"""The benchmark suite: every figure the issues define, each beside its target, in one JSON and one
Markdown table under ``results/bench/``.

``--quick`` runs every figure at a small scale (under 10 minutes on two cores); figures whose
target is defined only at full scale are then reported with ``ok`` empty. Work (synthetic sets,
the supernet, searches) goes to ``OUT/work``; the supernet benchmark resumes from what it wrote.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import pandas as pd

from nas.io import read_yaml, write_json, write_text

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True)
class Scale:
    quick: bool
    synth_images: int  # generation speed sample
    baseline_images: int
    baseline_minutes: float
    overhead_repeats: int
    supernet_minutes: float
    supernet_images: int
    val_images: int
    extra_subnets: int  # random subnets beside the four presets (Kendall's tau)
    predictor_samples: int
    predictor_passes: int
    search_trials: int
    eval_images: int
    repeat_subnets: int  # re-measured by a fresh process (repeatability)
    repeat_pause_s: float  # between the two measurements
    regret_seeds: int  # searches per budget whose regret is measured
    regret_adaptations: int  # latency models adapted anew (each with fresh measurements) for seed 0


FULL = Scale(False, 1000, 14000, 20, 20, 30, 1000, 200, 4, 120, 3, 40, 100, 24, 180, 5, 3)
QUICK = Scale(True, 200, 240, 0.75, 6, 1.5, 120, 30, 1, 16, 2, 6, 10, 4, 5, 2, 2)


def figure(name: str, value, unit: str, target: str, ok: bool | None, scale: Scale | None = None) -> dict:
    """One row of the table; at quick scale a full-scale target is shown but not judged. NumPy
    scalars (a comparison of NumPy figures gives ``numpy.bool_``) become Python ones for JSON."""
    plain = lambda v: v.item() if hasattr(v, "item") else v  # noqa: E731
    if scale is not None and scale.quick:
        return {"name": name + " [quick scale]", "value": plain(value), "unit": unit,
                "target": f"{target} (full run)", "ok": None}
    return {"name": name, "value": plain(value), "unit": unit, "target": target, "ok": plain(ok)}


def bench_synth_speed(scale: Scale, size: int = 256) -> list[dict]:
    """Synthetic generation on one core (the process is pinned to one CPU while it runs)."""
    from nas.pose.synth import generate

    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            generate(tmp, scale.synth_images, seed=0, size=(size, size), progress=False)
            seconds = (time.perf_counter() - t) * 1000 / scale.synth_images
    finally:
        os.sched_setaffinity(0, cpus)
    return [figure(f"synthetic generation at {size}x{size}, one core, per 1,000 images", round(seconds, 2), "s",
                   "<= 60", seconds <= 60)]


def bench_oracle(scale: Scale, data: Path = SHARED_DATA / "coco-mini") -> list[dict]:
    """AP ceiling of the targets and decoder on real COCO val images."""
    from nas.pose.datacheck import oracle_ap
    from nas.pose.dataset import CocoPoseDataset

    ann = data / "annotations" / "person_keypoints_val.json"
    if not ann.exists():
        return [figure("oracle AP, coco-mini val at 512 (data absent: ../shared/data)", None, "AP", ">= 0.9", None)]
    ap = oracle_ap(CocoPoseDataset(ann, data / "images"), 512)["AP"]
    return [figure("oracle AP, coco-mini val at 512", round(ap, 4), "AP", ">= 0.9", ap >= 0.9)]


def bench_completion(scale: Scale, data: Path = SHARED_DATA / "coco-mini", drop: float = 0.2) -> list[dict]:
    """Joint refinement: real coco-mini val people with ``drop`` of their labelled joints removed,
    completed by the network (trained on synthetic and coco-mini train skeletons alone) and by the
    midpoint heuristic; OKS against the originals over every labelled joint, and over the dropped."""
    from nas.pose import completion
    from nas.pose.dataset import CocoPoseDataset

    name = f"skeleton completion, coco-mini val, {drop:.0%} of labelled joints dropped: OKS network / heuristic"
    train, val = (data / "annotations" / f"person_keypoints_{split}.json" for split in ("train", "val"))
    if not val.exists():
        return [figure(name + " (data absent: ../shared/data)", None, "x", "> 1", None)]
    skeletons = completion.training_skeletons([str(train)], 2000 if scale.quick else 20000)
    model = completion.train_completion(*skeletons, steps=300 if scale.quick else 3000, progress=True)
    val = CocoPoseDataset(val, data / "images")
    m = completion.judge(model, *completion.coco_skeletons(val), drop, draws=1 if scale.quick else 5)
    return [figure(f"{name} ({m['network']:.3f} against {m['heuristic']:.3f}, {m['people']} people; over the dropped"
                   f" joints only {m['network_dropped']:.3f} against {m['heuristic_dropped']:.3f})",
                   round(m["network"] / m["heuristic"], 3), "x", "> 1", m["network"] > m["heuristic"], scale)]


def synthetic_set(work: Path, name: str, images: int, seed: int) -> Path:
    """A synthetic set at 256x256 under ``work``, made once."""
    from nas.pose import synth

    folder = work / "data" / f"{name}-{images}"
    synth.synthetic_set(folder, images, seed)
    return folder


def bench_baseline(scale: Scale, work: Path) -> list[dict]:
    """The baseline recipe (nas/app/configs/baseline.yaml) trained alone on synthetic data."""
    from nas.pose.dataset import set_files
    from nas.train.static import TrainConfig, train

    (train_ann, train_images), (val_ann, val_images) = (set_files(synthetic_set(work, name, images, seed)) for
                                                        name, images, seed in (("train", scale.baseline_images, 1),
                                                                               ("val", scale.val_images, 2)))
    with resources.as_file(resources.files("nas.app.configs") / "baseline.yaml") as path:
        recipe = read_yaml(path, "baseline recipe")
    cfg = TrainConfig.from_dict({**recipe, "time_budget_min": scale.baseline_minutes, "val_limit": None,
                                 "train_ann": train_ann, "train_images": train_images, "val_ann": val_ann,
                                 "val_images": val_images})
    shutil.rmtree(work / "baseline", ignore_errors=True)
    ap = train(cfg, work / "baseline")["AP"]
    return [figure(f"baseline AP, synthetic val ({scale.val_images} images), {scale.baseline_minutes:g} min "
                   f"training on {scale.baseline_images} images", round(ap, 4), "AP", ">= 0.5", ap >= 0.5, scale)]


def bench_cost_speed(scale: Scale, configs: int = 2000) -> list[dict]:
    """Analytic MACs and parameters of random configs per second (the search prices every trial)."""
    from search_spaces import SearchSpace
    from supernet.cost import arch_cost

    space = SearchSpace.load("cpu")
    archs = [space.random(seed) for seed in range(configs)]
    start = time.perf_counter()
    for arch in archs:
        arch_cost(arch)
    rate = configs / (time.perf_counter() - start)
    return [figure("analytic MACs + params, random cpu.yaml configs", round(rate), "configs/s", ">= 1000",
                   rate >= 1000)]


def bench_largest_latency(scale: Scale) -> list[dict]:
    """onnxruntime latency of cpu.yaml's largest subnet: the space spans the CPU's useful range."""
    from nas.latency.meter import LocalBackend
    from nas.latency.settings import RuntimeSettings
    from search_spaces import SearchSpace

    arch = SearchSpace.load("cpu").max()
    timing = LocalBackend(RuntimeSettings()).measure(arch)
    ms = timing["median_ms"]
    return [figure(f"onnxruntime latency of cpu.yaml max at {arch['resolution']} px, 2 threads (median; p90 "
                   f"{timing['p90_ms']:.1f})", round(ms, 2), "ms", "10 to 40", 10 <= ms <= 40)]


def bench_supernet_overhead(scale: Scale, space: str = "cpu", batch: int = 8) -> list[dict]:
    """Training-step time of the supernet with a subnet active over the same step on its extracted
    static model (forward, backward, fused Adam step), alternating the two; worst over a few subnets."""
    import torch

    from search_spaces import SearchSpace
    from supernet.network import PoseNet, extract

    sp = SearchSpace.load(space)
    supernet = PoseNet.supernet(sp).to(memory_format=torch.channels_last)
    ratios = {}
    for name, arch in (("litepose_xs", sp.preset("litepose_xs")), ("random0", sp.random(0)),
                       ("random1", sp.random(1)), ("min", sp.min())):
        r = arch["resolution"]
        x = torch.randn(batch, 3, r, r).contiguous(memory_format=torch.channels_last)
        nets = (supernet.set_active(arch), extract(supernet, arch).train().to(memory_format=torch.channels_last))
        opts = [torch.optim.Adam(n.parameters(), 1e-4, fused=True) for n in nets]
        times: list[list[float]] = [[], []]
        for _ in range(scale.overhead_repeats):
            for j in (0, 1):
                start = time.perf_counter()
                sum(o.square().mean() for o in nets[j](x)).backward()
                opts[j].step()
                opts[j].zero_grad(set_to_none=True)
                times[j].append(time.perf_counter() - start)
        ratios[name] = statistics.median(times[0][2:]) / statistics.median(times[1][2:])
    worst = max(ratios, key=ratios.get)
    return [figure(f"supernet step / static step, {space}.yaml subnets, batch {batch} (worst: {worst}; "
                   + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()) + ")", round(ratios[worst], 3), "x",
                   "<= 1.10", ratios[worst] <= 1.10, scale)]


def bench_supernet(scale: Scale, work: Path) -> list[dict]:
    """Inherited against stand-alone AP (presets) and Kendall's tau over subnets across the MACs range."""
    from nas.app.bench_supernet import run_supernet_benchmark

    s = run_supernet_benchmark(work / "supernet", scale.supernet_minutes, scale.supernet_images, scale.val_images,
                               scale.extra_subnets)
    budget = f"{s['supernet_minutes']:.0f}-minute supernet, {s['supernet_steps']} steps"
    tau = s["kendall_tau"]
    return [figure(f"presets whose inherited AP >= stand-alone AP ({budget})",
                   s["presets_inherited_at_least_standalone"], f"of {s['presets']}", ">= 3",
                   s["presets_inherited_at_least_standalone"] >= 3, scale),
            figure(f"Kendall's tau, inherited vs stand-alone AP over {s['subnets']} subnets ({budget}; "
                   "undefined when either side is all ties)", None if math.isnan(tau) else round(tau, 3), "tau",
                   ">= 0.7", tau >= 0.7, scale)]


def bench_predictor(scale: Scale, work: Path) -> list[dict]:
    """Latency predictor accuracy on held-out subnets beside the device's own repeatability."""
    from nas.latency.meter import LocalBackend
    from nas.latency.predictor import build_predictor
    from nas.latency.settings import RuntimeSettings
    from search_spaces import SearchSpace

    r = build_predictor(SearchSpace.load("cpu"), LocalBackend(RuntimeSettings()), work / "predictor",
                        scale.predictor_samples, passes=scale.predictor_passes)
    within, repeat = r["within_10pct"], r["repeatability_within_10pct"]
    ok = within >= 0.95 or (repeat < 0.95 and within >= repeat - 0.02)
    return [figure(f"latency predictor, held-out cpu.yaml subnets within +/-10 % ({r['held_out']} subnets)",
                   round(within, 3), "share", ">= 0.95, or >= repeatability - 0.02", ok, scale),
            figure("latency repeatability on this machine (re-measured within +/-10 %)", round(repeat, 3), "share",
                   "report", None)]


def fresh_latency_table(scale: Scale, out: Path, flags: list[str] | tuple = ()) -> pd.DataFrame:
    """The benchmark's random ``cpu`` subnets measured by a fresh ``posenas latency table`` process."""
    import subprocess
    import sys

    subprocess.run([str(Path(sys.executable).with_name("posenas")), "latency", "table", "--space", "cpu",
                    "--random", str(scale.repeat_subnets), "--seed", "100", "--no-cache", "--out", str(out), *flags],
                   check=True)
    return pd.read_csv(out)


def bench_repeatability(scale: Scale, work: Path) -> list[dict]:
    """Random cpu.yaml subnets measured by a fresh ``posenas latency table`` process, then again by
    another one minutes later: the share whose second figure lands within +/-10 % of the first,
    timed alone with two threads (before) and against the calibrated reference with one thread
    (the default), the two ways interleaved so that both meet the same machine."""
    ways = {"alone, 2 threads (before)": ["--target", "onnxruntime/fp32/2", "--no-reference"],
            "against the reference network, 1 thread (default)": []}
    folder = work / "repeatability"
    tables: dict[str, list[pd.DataFrame]] = {way: [] for way in ways}
    for attempt in ("first", "second"):
        for i, (way, flags) in enumerate(ways.items()):
            tables[way].append(fresh_latency_table(scale, folder / f"way{i}-{attempt}.csv", flags))
        if attempt == "first":
            time.sleep(scale.repeat_pause_s)
    rows = []
    for i, (way, (first, second)) in enumerate(tables.items()):
        change = (second["median_ms"] / first["median_ms"] - 1).abs()
        load = f"load {first['load'].mean():.1f} then {second['load'].mean():.1f}"
        rows.append(figure(f"latency re-measured by a fresh process {scale.repeat_pause_s / 60:.3g} min later within "
                           f"+/-10 %, {way} ({len(change)} subnets; within 5 %: {(change <= 0.05).mean():.0%}; {load})",
                           round(float((change <= 0.10).mean()), 3), "share", ">= 0.95" if i else "report",
                           bool((change <= 0.10).mean() >= 0.95) if i else None, scale))
    return rows


LOADS = {"quiet": 0, "one core busy": 1, "both cores loaded": 2}  # busy processes beside the measuring one


@contextlib.contextmanager
def busy_cores(count: int):
    """``count`` other processes each keeping a core busy while the block runs."""
    import subprocess
    import sys

    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def bench_contention(scale: Scale, work: Path) -> list[dict]:
    """Random cpu.yaml subnets measured by a fresh ``posenas latency table`` process on a quiet
    machine, then again with one core kept busy and with both cores loaded by other processes: the
    share whose loaded figure lands within +/-10 % of the quiet one (table: contention.csv)."""
    tables = {}
    for load, count in LOADS.items():
        with busy_cores(count):
            tables[load] = fresh_latency_table(scale, work / "contention" / f"{load.replace(' ', '-')}.csv")
    quiet = tables["quiet"]
    rows, frames = [], []
    for load, table in tables.items():
        ratio = table["median_ms"] / quiet["median_ms"]
        frames.append(table.assign(load=load, ratio_to_quiet=ratio))
        if load != "quiet":
            share = float(((ratio - 1).abs() <= 0.10).mean())
            rows.append(figure(f"latency with {load} by another process within +/-10 % of the quiet figure "
                               f"({len(table)} subnets, fresh processes; median ratio {ratio.median():.3f}, the "
                               f"reference {table['slowdown'].median():.2f}x slow)", round(share, 3), "share",
                               ">= 0.95", share >= 0.95, scale))
    write_text(work / "contention.csv", pd.concat(frames).to_csv(index=False))
    return rows


def bench_runtime_speedup(scale: Scale) -> list[dict]:
    """onnxruntime against torch eager on the same subnets: why deployment latency means ONNX."""
    from nas.latency.meter import LocalBackend
    from nas.latency.settings import RuntimeSettings
    from search_spaces import SearchSpace

    space = SearchSpace.load("cpu")
    network = RuntimeSettings(latency_of="network")
    rows = []
    for name in ("litepose_xs", "max"):
        arch = space.preset(name)
        ort = LocalBackend(network).measure(arch)["median_ms"]
        eager = LocalBackend(replace(network, backend="torch", repeats=10, warmup=3)).measure(arch)["median_ms"]
        rows.append(figure(f"torch eager / onnxruntime network latency, cpu.yaml {name} ({eager:.1f} ms / {ort:.1f} "
                           f"ms, {network.threads} thread)", round(eager / ort, 2), "x",
                           "report (onnxruntime is the deployment)", None))
    return rows


def bench_decode(scale: Scale, work: Path) -> list[dict]:
    """Post-processing (the in-graph decoding and the grouping outside it) against the network's
    onnxruntime latency of `litepose_xs`, measured in one run, for 1, 5, 10 and 20 people."""
    from nas.latency.meter import LocalBackend
    from nas.latency.settings import RuntimeSettings
    from search_spaces import SearchSpace

    arch = SearchSpace.load("cpu").preset("litepose_xs")
    rows, settings = [], RuntimeSettings(latency_of="total")
    for people in (1, 5, 10, 20):
        f = LocalBackend(replace(settings, people=people)).measure(arch)
        share = f["postprocess_ms"] / f["network_ms"]
        name = (f"post-processing / network latency, {people} people at {arch['resolution']} px "
                f"({f['postprocess_ms']:.2f} ms: in the graph {f['in_graph_decode_ms']:.2f}, grouping "
                f"{f['grouping_ms']:.2f}; litepose_xs network {f['network_ms']:.2f} ms)")
        rows.append(figure(name, round(share, 3), "share", "<= 0.25" if people == 10 else "report",
                           share <= 0.25 if people == 10 else None))
    return rows


def bench_search(scale: Scale, work: Path) -> list[dict]:
    """NSGA-II against random search at the same trial budget on the benchmark's supernet, and the
    throughput of trials whose latency is measured (no cache) with the time split per trial."""
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.settings import RuntimeSettings
    from nas.pose.dataset import set_files
    from nas.search.config import SearchConfig
    from nas.search.study import run_search

    supernet = work / "supernet" / "supernet" / "supernet.pt"
    val_ann, val_images = set_files(work / "supernet" / "data" / "val")
    latency_budget = 6.0
    rows, summaries = [], {}
    for sampler in ("nsga2", "random"):
        out = work / f"search-{sampler}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = SearchConfig(supernet=str(supernet), val_ann=val_ann, val_images=val_images,
                           latency_budget_ms=latency_budget, out=str(out), trials=scale.search_trials, sampler=sampler,
                           eval_images=scale.eval_images, seed=0)
        start = time.perf_counter()
        summaries[sampler] = run_search(cfg, LatencyMeter(LocalBackend(RuntimeSettings()),
                                                          LatencyCache(out / "latency.sqlite")))
        summaries[sampler]["minutes"] = (time.perf_counter() - start) / 60
    table = pd.read_csv(work / "search-nsga2" / "trials.csv")
    split = {k: table[k].fillna(0).mean() for k in ("latency_s", "calibration_s", "evaluation_s", "trial_s")}
    rows.append(figure(f"search trials per minute with measured latency (NSGA-II, {scale.search_trials} trials; "
                       f"per trial: latency {split['latency_s']:.1f} s, BN recalibration {split['calibration_s']:.1f} s,"
                       f" evaluation {split['evaluation_s']:.1f} s of {split['trial_s']:.1f} s)",
                       round(scale.search_trials / summaries["nsga2"]["minutes"], 2), "trials/min", "report", None))
    hv = {s: summaries[s].get("hypervolume", 0.0) for s in summaries}
    rows.append(figure(f"hypervolume NSGA-II / random search, {scale.search_trials} trials each, budget "
                       f"{latency_budget:g} ms (NSGA-II {hv['nsga2']:.4f}, random {hv['random']:.4f})",
                       round(hv["nsga2"] / hv["random"], 3) if hv["random"] else None, "x", ">= 1",
                       hv["nsga2"] >= hv["random"], scale))
    return rows


def shipped_zoo_search(scale: Scale, work: Path, zoo_ref: str, budget_ms: float) -> dict | None:
    """What a search on the shipped supernet needs (its validation set of another seed, the
    budget), or None when the entry does not ship in this installation."""
    from nas.pose.synth import synthetic_set as generate_set
    from nas.subnet import zoo

    if not zoo.is_available(zoo_ref):
        return None
    val_ann, val_images = generate_set(work / "zoo-val", 200 if not scale.quick else 40, 2)
    return {"supernet": zoo_ref, "val_ann": val_ann, "val_images": val_images, "latency_budget_ms": budget_ms,
            "eval_images": scale.eval_images, "seed": 0}


def not_shipped(what: str, zoo_ref: str) -> list[dict]:
    return [figure(f"{what} on {zoo_ref}: not measured, the entry does not ship in this installation", None, "",
                   "report", None)]


def bench_new_budget(scale: Scale, work: Path, budget_ms: float = 6.0, zoo_ref: str = "zoo:cpu-synth") -> list[dict]:
    """A new budget on the shipped supernet: the search on predictions (speed, verified front, the
    share of its candidates still within budget when measured) against the direct NSGA-II search
    given the same wall time, by the hypervolume of their measured fronts."""
    from nas.latency.adaptation import adapted_reference
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.settings import RuntimeSettings
    from nas.search.config import SearchConfig
    from nas.search.study import run_search
    from nas.subnet.inherit import TrainedSupernet

    common = shipped_zoo_search(scale, work, zoo_ref, budget_ms)
    if common is None:
        return not_shipped("a new budget", zoo_ref)
    meter = LatencyMeter(LocalBackend(RuntimeSettings()), LatencyCache(work / "zoo-latency.sqlite"))
    adapted_reference(meter, TrainedSupernet.load(zoo_ref).space).save(work / "zoo-latency-predictor.json")
    shutil.rmtree(work / "search-predicted", ignore_errors=True)
    shutil.rmtree(work / "search-direct", ignore_errors=True)
    fresh = lambda: LatencyMeter(LocalBackend(RuntimeSettings()))  # noqa: E731 - no cache: both measure anew
    predicted = run_search(SearchConfig(**common, out=str(work / "search-predicted"), accuracy_predictor=zoo_ref,
                                        predictor=str(work / "zoo-latency-predictor.json")), fresh())
    direct = run_search(SearchConfig(**common, out=str(work / "search-direct"), trials=10_000, population=10,
                                     timeout_min=predicted["total_s"] / 60), fresh())
    ratio = predicted["hypervolume"] / direct["hypervolume"] if direct.get("hypervolume") else None
    return [
        figure(f"predicted trials on zoo:cpu-synth ({predicted['trials']} distinct of 2000)",
               round(predicted["search_s"], 1), "s", "<= 30 s for >= 1000", predicted["search_s"] <= 30),
        figure(f"a new {budget_ms:g} ms budget: search on predictions + verification of {predicted['verified']}",
               round(predicted["total_s"], 1), "s", "<= 120", predicted["total_s"] <= 120),
        figure("verified candidates within budget when measured", round(predicted["feasible_share"] or 0, 3),
               "share", "report", None),
        figure(f"hypervolume, search on predictions / direct NSGA-II at equal wall time ({predicted['total_s']:.0f} s;"
               f" {direct['trials']} direct trials; {predicted['hypervolume']:.4f} against "
               f"{direct.get('hypervolume', 0):.4f})", round(ratio, 3) if ratio else None, "x", ">= 1.1",
               ratio is not None and ratio >= 1.1, scale),
    ]


def bench_budgets(scale: Scale, work: Path, budget_ms: float = 6.0, zoo_ref: str = "zoo:cpu-synth") -> list[dict]:
    """A search on the shipped supernet budgeting the median, and one budgeting the p90: every
    verified subnet within budget re-measured by a fresh process, as a user who deploys it would
    (table: budgets.csv). Is the budget the search promised the one the user sees?"""
    import json

    from nas.latency.adaptation import adapted_reference
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.settings import RuntimeSettings
    from nas.search.config import LATENCY_STATS, SearchConfig
    from nas.search.predicted import VERIFIED
    from nas.search.study import run_search
    from nas.subnet.inherit import TrainedSupernet

    common = shipped_zoo_search(scale, work, zoo_ref, budget_ms)
    if common is None:
        return not_shipped("budgets re-measured", zoo_ref)
    backend = LocalBackend(RuntimeSettings())
    meter = LatencyMeter(backend, LatencyCache(work / "budgets-latency.sqlite"))
    model, supernet = work / "budgets-latency-predictor.json", TrainedSupernet.load(zoo_ref)
    adapted_reference(meter, supernet.space).save(model)
    rows, figures = [], []
    for stat, figure_name in LATENCY_STATS.items():
        out = work / f"budgets-{stat}"
        shutil.rmtree(out, ignore_errors=True)
        run_search(SearchConfig(**common, out=str(out), accuracy_predictor=zoo_ref, predictor=str(model),
                                latency_stat=stat), meter)
        verified = pd.read_csv(out / VERIFIED)
        for _, row in verified[verified["feasible"]].iterrows():
            again = backend.remeasure(json.loads(row["arch"]), supernet.num_keypoints)
            rows.append({"latency_stat": stat, "arch_hash": row["arch_hash"], "searched_ms": row["latency_ms"],
                         "fresh_median_ms": again["median_ms"], "fresh_p90_ms": again["p90_ms"],
                         "within": again[figure_name] <= budget_ms})
        held = pd.DataFrame([r for r in rows if r["latency_stat"] == stat])
        share = float(held["within"].mean()) if len(held) else 0.0
        figures.append(figure(f"verified subnets of a {budget_ms:g} ms search budgeting the {stat}, re-measured by a "
                              f"fresh process: {stat} within budget ({len(held)} subnets; fresh {stat} "
                              f"{held[f'fresh_{stat}_ms'].max() if len(held) else 0:.2f} ms at most)",
                              round(share, 3), "share", ">= 0.95", share >= 0.95, scale))
    write_text(work / "budgets.csv", pd.DataFrame(rows).to_csv(index=False))
    return figures


def bench_regret(scale: Scale, work: Path, budgets_ms: tuple[float, ...] = (2.0, 4.0, 6.0, 12.0),
                 zoo_ref: str = "zoo:cpu-synth") -> list[dict]:
    """The search on predictions with several seeds at each budget on the shipped supernet, as the
    main job runs it: each seed's regret against the best subnet any search verified
    (``nas.search.regret``), and the spread of their best APs. First as a user's first search (the
    predictor as shipped), then as a later one (refitted on what all the first searches evaluated);
    beside them, the first searches without their local search, and seed 0 under latency models
    adapted anew, each with measurements of its own (table: regret.csv). The seeds share one latency
    cache, so a subnet's latency is the same figure in all of them."""
    from nas.latency.adaptation import adapted_reference
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.settings import RuntimeSettings
    from nas.search.config import SearchConfig
    from nas.search.objective import search_supernet
    from nas.search.predicted import VERIFIED
    from nas.search.regret import regret_table
    from nas.search.study import run_search

    common = shipped_zoo_search(scale, work, zoo_ref, budgets_ms[0])
    if common is None:
        return not_shipped("regret", zoo_ref)
    common["eval_images"] = None  # every validation image, as the main job evaluates
    supernet = search_supernet(SearchConfig(**common, out=str(work)))
    budgets = budgets_ms if not scale.quick else budgets_ms[-2:-1]

    def adapted(name: str) -> tuple[LatencyMeter, str]:
        meter = LatencyMeter(LocalBackend(RuntimeSettings()), LatencyCache(work / f"{name}.sqlite"))
        adapted_reference(meter, supernet.space).save(work / f"{name}-predictor.json")
        return meter, str(work / f"{name}-predictor.json")

    def search(name: str, budget: float, seed: int, refit: bool, latency: tuple[LatencyMeter, str]) -> pd.DataFrame:
        out = work / f"regret-{budget:g}ms-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = SearchConfig(**{**common, "latency_budget_ms": budget, "seed": seed}, out=str(out), refit=refit,
                           accuracy_predictor=zoo_ref, predictor=latency[1])
        run_search(cfg, latency[0], supernet=supernet)
        return pd.read_csv(out / VERIFIED)

    shared = adapted("regret-latency")
    first = {(b, seed): search(f"seed{seed}", b, seed, False, shared) for b in budgets
             for seed in range(scale.regret_seeds)}
    readapted = {(b, 0): first[b, 0] for b in budgets}
    for again in range(1, scale.regret_adaptations):
        latency = adapted(f"regret-latency-{again}")
        readapted.update({(b, again): search(f"seed0-adaptation{again}", b, 0, False, latency) for b in budgets})
    later = {(b, seed): search(f"seed{seed}-refitted", b, seed, True, shared) for b in budgets
             for seed in range(scale.regret_seeds)}
    every = {(*key, name): v for name, runs in (("first", first), ("later", later), ("readapted", readapted))
             for key, v in runs.items()}
    tables = {"first": regret_table(first, every), "refitted": regret_table(later, every),
              "first, no local search": regret_table({k: v[~v["local"]] for k, v in first.items()}, every),
              "seed 0, latency adapted anew": regret_table(readapted, every)}
    write_text(work / "regret.csv", pd.concat([t.assign(search=name) for name, t in tables.items()]).to_csv(index=False))
    figures = []
    for budget in budgets:
        rows = {name: t[t["budget_ms"] == budget] for name, t in tables.items()}
        for name in ("first", "refitted"):
            regret, best = rows[name]["regret"], rows[name]["best_AP"]
            spread = best.max() - best.min()
            without = f"; without the local search, worst {rows['first, no local search']['regret'].max():.3f}" \
                if name == "first" else ""
            figures += [
                figure(f"regret under {budget:g} ms end to end, {name} search, worst of {len(regret)} seeds "
                       f"(reference AP {rows[name]['reference_AP'].iloc[0]:.3f}; seeds "
                       f"{', '.join(f'{r:.3f}' for r in regret)}{without})",
                       round(regret.max(), 4), "AP", "<= 0.01", regret.max() <= 0.01, scale),
                figure(f"best AP under {budget:g} ms, {name} search, over {len(best)} seeds: max - min",
                       round(spread, 4), "AP", "<= 0.01", spread <= 0.01, scale)]
        best = rows["seed 0, latency adapted anew"]["best_AP"]
        figures.append(figure(f"best AP under {budget:g} ms, first search of seed 0, over {len(best)} latency models "
                              f"adapted anew: max - min", round(best.max() - best.min(), 4), "AP", "<= 0.01",
                              best.max() - best.min() <= 0.01, scale))
    return figures


def bench_deployed_budget(scale: Scale, work: Path, budgets_ms: tuple[float, ...] = (6.0, 12.0),
                          zoo_ref: str = "zoo:cpu-synth") -> list[dict]:
    """At each budget, the Pareto set under the end-to-end budget beside the one under the same
    network-only budget on the shipped supernet (searches on predictions, verified): which
    subnets change, and how far the network-only front overstates what fits once post-processing
    is counted (table: deployed-budget.csv)."""
    from nas.io import read_json
    from nas.latency.adaptation import adapted_reference
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.settings import RuntimeSettings
    from nas.search.config import SearchConfig
    from nas.search.study import run_search
    from nas.subnet.inherit import TrainedSupernet
    from search_spaces.space import with_defaults

    common = shipped_zoo_search(scale, work, zoo_ref, budgets_ms[0])
    if common is None:
        return not_shipped("end-to-end against network-only budgets", zoo_ref)
    space, cache = TrainedSupernet.load(zoo_ref).space, LatencyCache(work / "zoo-latency.sqlite")
    meters = {kind: LatencyMeter(LocalBackend(RuntimeSettings(latency_of=kind)), cache)
              for kind in ("network", "total")}
    for kind, meter in meters.items():
        adapted_reference(meter, space).save(work / f"zoo-latency-{kind}.json")
    tables, figures = [], []
    for budget in budgets_ms:
        fronts = {}
        for kind, meter in meters.items():
            out = work / f"search-{kind}-{budget:g}ms"
            shutil.rmtree(out, ignore_errors=True)
            run_search(SearchConfig(**{**common, "latency_budget_ms": budget}, out=str(out),
                                    accuracy_predictor=zoo_ref, predictor=str(work / f"zoo-latency-{kind}.json")),
                       meter)
            fronts[kind] = read_json(out / "pareto.json")["pareto"]
        hashes = {kind: {p["arch_hash"] for p in front} for kind, front in fronts.items()}
        table = pd.DataFrame([{"budget_ms": budget, "front": kind, "arch_hash": p["arch_hash"], "AP": p["AP"],
                               "resolution": p["arch"]["resolution"], "head": with_defaults(p["arch"])["head"]["type"],
                               "multi_resolution": p["arch"]["head"].get("multi_resolution", False),
                               "network_ms": meters["network"].measure(p["arch"])["median_ms"],
                               "total_ms": meters["total"].measure(p["arch"])["median_ms"],
                               "on_both": all(p["arch_hash"] in h for h in hashes.values())}
                              for kind in fronts for p in fronts[kind]])
        tables.append(table)
        figures += deployed_budget_figures(table, budget)
    write_text(work / "deployed-budget.csv", pd.concat(tables).to_csv(index=False))
    return figures


def deployed_budget_figures(table: pd.DataFrame, budget_ms: float) -> list[dict]:
    network_front = table[table["front"] == "network"]
    over = float((network_front["total_ms"] > budget_ms).mean())
    total_front = table[table["front"] == "total"]
    promised, fits = network_front["AP"].max(), total_front["AP"].max()
    shares = [figure(f"end-to-end {budget_ms:g} ms Pareto set: {head}-head subnets ({len(on)} of {len(total_front)}; "
                     f"AP {', '.join(f'{ap:.3f}' for ap in on['AP']) or 'none'})",
                     round(len(on) / len(total_front), 3) if len(total_front) else None, "share", "report", None)
              for head, on in ((h, total_front[total_front["head"] == h]) for h in sorted(set(table["head"])))]
    return [
        figure(f"network-only {budget_ms:g} ms Pareto set: subnets over {budget_ms:g} ms end to end "
               f"({len(network_front)} subnets; {int(network_front['on_both'].sum())} also on the end-to-end set)",
               round(over, 3), "share", "report", None),
        figure(f"best AP under {budget_ms:g} ms, network-only / end to end ({promised:.3f} / {fits:.3f})",
               round(promised / fits, 3) if fits else None, "x", "report", None),
        figure(f"end-to-end / network latency on the network-only {budget_ms:g} ms Pareto set (median)",
               round(float((network_front["total_ms"] / network_front["network_ms"]).median()), 2), "x", "report",
               None),
    ] + shares


def bench_targets(scale: Scale, work: Path) -> list[dict]:
    """End-to-end latency of every preset on every target (``nas.app.bench_targets``), one figure
    per network at 1 thread with the ratios a deployment choice turns on (table: targets.csv)."""
    from nas.app.bench_targets import described, measure_targets, plot_targets, ratios

    table = measure_targets(work, scale.quick)
    plot_targets(table, work / "targets.png")
    two = ratios(table, 2)
    return [figure(f"{name}: onnxruntime fp32 end to end with 10 people, 1 thread; {described(r)} (2 threads: "
                   f"{two.loc[name].onnxruntime_fp32_ms:.1f} ms; {described(two.loc[name])})",
                   round(r.onnxruntime_fp32_ms, 2), "ms", "report", None) for name, r in ratios(table, 1).iterrows()]


def bench_target_fronts(scale: Scale, work: Path, budget_ms: float = 6.0, zoo_ref: str = "zoo:cpu-synth") -> list[dict]:
    """On the shipped supernet under an end-to-end budget, one search on predictions per target of
    ``FRONT_TARGETS`` (each with the shipped latency model adapted to it); every subnet of every
    front then measured on every target (table: target-fronts.csv, plot: target-fronts.png). Does
    each target's front win on its own target, does a front that may quantize lose anything, and
    what does int8 cost each int8 winner against its fp32 twin?"""
    from nas.app.bench_targets import FRONT_TARGETS, best_on, cross_measured, plot_fronts
    from nas.latency.adaptation import adapted_reference
    from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
    from nas.latency.settings import RuntimeSettings, target_folder_name
    from nas.search.config import SearchConfig
    from nas.search.objective import Objective, search_supernet
    from nas.search.predicted import VERIFIED
    from nas.search.results import hypervolume, pareto_front
    from nas.search.study import run_search
    from nas.search.targets import front_over

    common = shipped_zoo_search(scale, work, zoo_ref, budget_ms)
    if common is None:
        return not_shipped("fronts per deployment target", zoo_ref)
    common["eval_images"] = None  # every validation image, as the main job evaluates
    supernet = search_supernet(SearchConfig(**common, out=str(work)))
    cache, fronts, objectives = LatencyCache(work / "target-fronts-latency.sqlite"), {}, {}
    for target in FRONT_TARGETS:
        name = f"target-fronts-{target_folder_name(target)}"
        meter = LatencyMeter(LocalBackend(RuntimeSettings.of({"target": target}, "bench")), cache)
        adapted_reference(meter, supernet.space).save(work / f"{name}-latency.json")
        cfg = SearchConfig(**common, out=str(work / name), accuracy_predictor=zoo_ref, refit=False,
                           predictor=str(work / f"{name}-latency.json"))  # each a user's first search
        shutil.rmtree(cfg.out, ignore_errors=True)
        run_search(cfg, meter, supernet=supernet)
        fronts[target] = pareto_front(pd.read_csv(Path(cfg.out) / VERIFIED))
        objectives[target] = Objective(cfg, meter, supernet)
    table = cross_measured(fronts, objectives)
    write_text(work / "target-fronts.csv", table.to_csv(index=False))
    fp32, int8 = FRONT_TARGETS[:2]
    merged = front_over({t: fronts[t] for t in (fp32, int8)})
    plot_fronts(fronts, merged, budget_ms, work / "target-fronts.png")
    figures = []
    for target in FRONT_TARGETS:
        own, other = best_on(table, target, own=True), best_on(table, target, own=False)
        figures.append(figure(
            f"under {budget_ms:g} ms end to end on {target}: best AP of its own front ({own.AP:.3f}, "
            f"{own.latency_ms:.1f} ms, {own.arch_hash[:8]}) less the best of the other targets' fronts measured there "
            f"({other.AP:.3f}, {other.latency_ms:.1f} ms, {other.arch_hash[:8]}, from {other.front})",
            round(own.AP - other.AP, 4), "AP", ">= 0", own.AP >= other.AP, scale))
    drops = fronts[int8]["inherited_AP"] - fronts[int8]["AP"]
    fp32_volume = hypervolume(fronts[fp32], budget_ms)
    ratio = hypervolume(merged, budget_ms) / fp32_volume if fp32_volume else None  # None: no AP to compare
    return figures + [
        figure(f"onnxruntime, a front that may pick fp32 or int8 per subnet against the fp32 front: hypervolume under "
               f"{budget_ms:g} ms (best AP {merged['AP'].max():.3f} against {fronts[fp32]['AP'].max():.3f}; "
               f"{(merged['target'] == int8).sum()} of {len(merged)} points int8)", ratio and round(ratio, 3), "x",
               ">= 1", ratio is not None and ratio >= 1, scale),
        figure(f"int8 winners' AP loss against their fp32 twins (torch's inherited AP), worst of {len(drops)}",
               round(float(drops.max()), 4), "AP", "<= 0.01", drops.max() <= 0.01, scale)]


def bench_latency_transfer(scale: Scale, work: Path) -> list[dict]:
    """The shipped latency model moved to each target of this machine by K designed measurements,
    judged on held-out random ``cpu`` subnets measured there (``nas.app.bench_transfer``; table:
    latency-transfer.csv, plot: latency-transfer.png)."""
    from nas.app.bench_transfer import ANCHOR_COUNTS, plot_transfer, transfer_table
    from search_spaces import SearchSpace

    table = transfer_table(SearchSpace.load("cpu"), work)
    plot_transfer(table, work / "latency-transfer.png")
    figures, most = [], max(ANCHOR_COUNTS)
    for target, rows in table.groupby("target", sort=False):
        kind = rows[rows["adaptation"] == "per kind"].set_index("anchors")
        common = rows[rows["adaptation"] == "common factor"].set_index("anchors")
        fewer = ", ".join(f"K={k}: {kind.within_10pct[k]:.0%}" for k in ANCHOR_COUNTS if k != most)
        figures += [
            figure(f"latency model moved to {target} with K={most} measurements ({kind.anchor_seconds[most]:.0f} s): "
                   f"{kind.held_out[most]} held-out subnets within +/-10 % ({fewer}; one common factor "
                   f"{common.within_10pct[most]:.0%}; median error {kind.median_error[most]:+.1%})",
                   round(100 * kind.within_10pct[most], 1), "%", ">= 95 in <= 60 s",
                   kind.within_10pct[most] >= 0.95 and kind.anchor_seconds[most] <= 60, scale)]
    return figures


FIGURES = {"synth": bench_synth_speed, "oracle": bench_oracle, "baseline": bench_baseline, "cost": bench_cost_speed,
           "largest": bench_largest_latency, "overhead": bench_supernet_overhead, "supernet": bench_supernet,
           "predictor": bench_predictor,
           "repeatability": bench_repeatability, "runtime": bench_runtime_speedup, "decode": bench_decode,
           "search": bench_search, "completion": bench_completion,
           "new-budget": bench_new_budget, "deployed-budget": bench_deployed_budget, "regret": bench_regret,
           "targets": bench_targets, "target-fronts": bench_target_fronts, "latency-transfer": bench_latency_transfer,
           "contention": bench_contention, "budgets": bench_budgets}
NEEDS_WORK = {"baseline", "supernet", "predictor", "repeatability", "decode", "search", "new-budget",
              "deployed-budget", "regret", "targets", "target-fronts", "latency-transfer", "contention", "budgets"}


def run_benchmarks(out: str | Path = "results/bench", quick: bool = False, only: list[str] | None = None) -> list[dict]:
    """Run the figures (all, or ``only`` those named) and write bench.json and bench.md."""
    scale = QUICK if quick else FULL
    out = Path(out)
    work = out / "work"
    names = only or list(FIGURES)
    if "search" in names and "supernet" not in names and not (work / "supernet" / "supernet" / "supernet.pt").exists():
        names = ["supernet", *names]  # the search runs on the benchmark's supernet
    figures = []
    for name in names:
        start = time.perf_counter()
        rows = FIGURES[name](scale, work) if name in NEEDS_WORK else FIGURES[name](scale)
        for row in rows:
            row["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{row['name']}: {row['value']} {row['unit']} (target {row['target']})", flush=True)
        figures += rows
    write_json(out / "bench.json", {"quick": quick, "figures": figures}, indent=2)
    table = pd.DataFrame(figures)
    table["met"] = table["ok"].map({True: "yes", False: "NO"}).fillna("")
    write_text(out / "bench.md", table[["name", "value", "unit", "target", "met", "seconds"]].to_markdown(index=False)
               + "\n")
    return figures
