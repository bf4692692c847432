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


def run_benchmarks(out: str | Path = "results/bench") -> list[dict]:
    figures = [f for f in (bench_synth_speed(), bench_oracle(256), bench_oracle(512)) if f is not None]
    out = Path(out)
    write_json(out / "bench.json", figures, indent=2)
    lines = ["| figure | value | unit | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {f['name']} | {f['value']} | {f['unit']} | {f['target']} | "
              f"{'' if f['ok'] is None else ('yes' if f['ok'] else 'NO')} |" for f in figures]
    write_text(out / "bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return figures
