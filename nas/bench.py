"""Benchmarks that write figures beside their targets (JSON + Markdown under results/bench/)."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from nas.io import write_json, write_text

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bench_synth_speed(images: int = 1000, size: int = 256) -> dict:
    """Synthetic generation on one core (the process is pinned to one CPU while it runs)."""
    from nas.synth import generate

    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            generate(tmp, images, seed=0, size=(size, size), progress=False)
            seconds = time.perf_counter() - t
    finally:
        os.sched_setaffinity(0, cpus)
    return {"name": f"synthetic generation, {images} images at {size}x{size}, one core",
            "value": round(seconds, 2), "unit": "s", "target": "<= 60", "ok": seconds <= 60}


def bench_oracle(resolution: int, data: Path = SHARED_DATA / "coco-mini") -> dict | None:
    """AP ceiling of the targets and decoder on real COCO val images."""
    from nas.datacheck import oracle_ap
    from nas.dataset import CocoPoseDataset

    ann = data / "annotations" / "person_keypoints_val.json"
    if not ann.exists():
        return None
    ap = oracle_ap(CocoPoseDataset(ann, data / "images"), resolution)["AP"]
    target = ">= 0.9" if resolution == 512 else "report"
    return {"name": f"oracle AP, coco-mini val at {resolution}", "value": round(ap, 4), "unit": "AP",
            "target": target, "ok": ap >= 0.9 if resolution == 512 else None}


def bench_cost_speed(space: str = "cpu", configs: int = 2000) -> dict:
    """Analytic MACs and parameters of random configs, per second (the search prices every trial)."""
    from search_spaces import SearchSpace
    from supernet.cost import arch_cost

    sp = SearchSpace.load(space)
    archs = [sp.random(seed) for seed in range(configs)]
    start = time.perf_counter()
    for arch in archs:
        arch_cost(arch)
    rate = configs / (time.perf_counter() - start)
    return {"name": f"analytic MACs + params, random {space} configs", "value": round(rate), "unit": "configs/s",
            "target": ">= 1000", "ok": rate >= 1000}


def bench_largest_latency(space: str = "cpu", threads: int = 2) -> dict:
    """onnxruntime latency of the space's largest subnet at its largest resolution."""
    from nas.latency import LocalBackend, RuntimeSettings
    from search_spaces import SearchSpace

    arch = SearchSpace.load(space).max()
    timing = LocalBackend(RuntimeSettings(threads=threads)).measure(arch)
    ms = timing["median_ms"]
    return {"name": f"onnxruntime latency of {space}.yaml max at {arch['resolution']} px, {threads} threads "
                    f"(median; p90 {timing['p90_ms']:.1f})", "value": round(ms, 2), "unit": "ms",
            "target": "10 to 40", "ok": 10 <= ms <= 40}


def bench_supernet_overhead(space: str = "cpu", batch: int = 8, repeats: int = 20) -> dict:
    """Training-step time of the supernet with a subnet active over the same step on its extracted
    static model (forward, backward, fused Adam step), alternating the two; worst over a few subnets."""
    import statistics

    import torch

    from search_spaces import SearchSpace
    from supernet.network import PoseNet, extract

    sp = SearchSpace.load(space)
    supernet = PoseNet(sp.max()).to(memory_format=torch.channels_last)
    ratios = {}
    for name, arch in (("litepose_xs", sp.preset("litepose_xs")), ("random0", sp.random(0)),
                       ("random1", sp.random(1)), ("min", sp.min())):
        r = arch["resolution"]
        x = torch.randn(batch, 3, r, r).contiguous(memory_format=torch.channels_last)
        nets = (supernet.set_active(arch), extract(supernet, arch).train().to(memory_format=torch.channels_last))
        opts = [torch.optim.Adam(n.parameters(), 1e-4, fused=True) for n in nets]
        times: list[list[float]] = [[], []]
        for i in range(repeats + 2):
            for j in ((0, 1) if i % 2 else (1, 0)):
                start = time.perf_counter()
                sum(o.square().mean() for o in nets[j](x)).backward()
                opts[j].step()
                opts[j].zero_grad(set_to_none=True)
                times[j].append(time.perf_counter() - start)
        ratios[name] = statistics.median(times[0][2:]) / statistics.median(times[1][2:])
    worst = max(ratios, key=ratios.get)
    return {"name": f"supernet step / static step, {space}.yaml subnets, batch {batch} (worst: {worst}; "
                    + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()) + ")",
            "value": round(ratios[worst], 3), "unit": "x", "target": "<= 1.10", "ok": ratios[worst] <= 1.10}


def run_benchmarks(out: str | Path = "results/bench") -> list[dict]:
    figures = [bench_synth_speed(), bench_oracle(256), bench_oracle(512), bench_cost_speed(), bench_largest_latency(),
               bench_supernet_overhead()]
    figures = [f for f in figures if f is not None]
    out = Path(out)
    write_json(out / "bench.json", figures, indent=2)
    lines = ["| figure | value | unit | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {f['name']} | {f['value']} | {f['unit']} | {f['target']} | "
              f"{'' if f['ok'] is None else ('yes' if f['ok'] else 'NO')} |" for f in figures]
    write_text(out / "bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return figures
