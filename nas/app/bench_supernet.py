"""The supernet benchmark: inherited AP (BN recalibrated) against the same subnets trained alone.

One supernet of ``cpu.yaml`` is trained for at most ``minutes`` on synthetic data; then the
``max``, ``min`` and two LitePose-like presets, plus random subnets spread over the space's MACs
range, are each evaluated with inherited weights and trained alone for as many epochs as the
supernet saw. Reported: both APs per subnet, how many presets inherit at least their stand-alone
AP, and Kendall's tau between the two rankings. Every stage resumes from what it wrote.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

from nas.io import read_json, write_json, write_text
from nas.plots import against_diagonal, save, subplots
from nas.pose.synth import synthetic_set
from nas.search.predictor_build import spread_subnets
from search_spaces import arch_hash
from supernet.cost import arch_cost

PRESETS = ("max", "min", "litepose_xs", "litepose_s")


def train_alone(arch: dict, settings: dict, epochs: float, out: Path) -> float:
    """AP of ``arch`` trained alone for ``epochs`` into ``out/epochs-E`` (static trainer
    ``settings``; one folder per schedule, so a longer one never resumes a shorter one's
    checkpoint), recorded in its ``result.json``: the record alone is enough to skip the training
    again, so a finished subnet's checkpoint need not be kept (a ranking outlives the machine it
    was trained on)."""
    from nas.train.static import TrainConfig, train

    out = out / f"epochs-{epochs:g}"
    record = out / "result.json"
    if record.exists():
        saved = read_json(record, "stand-alone record")
        if isinstance(saved, dict) and saved.get("arch_hash") == arch_hash(arch) and saved.get("epochs") == epochs:
            return saved["AP"]
    warmup = 1.0 if epochs >= 1 else epochs / 4  # a fraction of an epoch still anneals
    alone = TrainConfig.from_dict({**settings, "arch": arch, "epochs": epochs, "val_every": max(1, round(epochs)),
                                   "lr": 4e-3, "warmup_epochs": warmup, "checkpoint_every": 50})  # resumable
    ap = train(alone, out)["AP"]
    write_json(record, {"arch_hash": arch_hash(arch), "epochs": epochs, "AP": ap, "arch": arch}, indent=1)
    return ap


def inherited_vs_standalone(supernet, archs: dict[str, dict], settings: dict, epochs: float,
                            out: Path) -> pd.DataFrame:
    """Each subnet's inherited AP beside its AP trained alone for ``epochs`` on the same data
    (static trainer ``settings``); one record per subnet in ``out/subnets``, so it resumes, kept
    only for the same weights (a supernet trained on since is evaluated again)."""
    from nas.pose.dataset import CocoPoseDataset

    val = CocoPoseDataset(settings["val_ann"], settings["val_images"])
    rows = []
    for name, arch in archs.items():
        record = out / "subnets" / f"{name}.json"
        saved = read_json(record, "ranking record") if record.exists() else {}
        if saved.get("supernet") == supernet.identity and saved.get("arch_hash") == arch_hash(arch) \
                and saved.get("epochs") == epochs:
            rows.append(saved)
            continue
        inherited = supernet.evaluate(arch, val)["AP"]
        standalone = train_alone(arch, settings, epochs, out / "standalone" / name)
        cost = arch_cost(arch)
        row = {"subnet": name, "supernet": supernet.identity, "arch_hash": arch_hash(arch), "macs": cost.macs,
               "params": cost.params,
               "resolution": arch["resolution"], "inherited_AP": inherited, "standalone_AP": standalone,
               "epochs": epochs}
        write_json(record, row, indent=1)
        rows.append(row)
    table = pd.DataFrame(rows)
    write_text(out / "subnets.csv", table.to_csv(index=False))
    return table


def run_supernet_benchmark(out: str | Path = "results/bench-supernet", minutes: float = 30, train_images: int = 1000,
                           val_images: int = 200, extra_subnets: int = 4, seed: int = 0) -> dict:
    from nas.subnet.inherit import TrainedSupernet
    from nas.train.supernet import CHECKPOINT, SupernetConfig, train_supernet

    out = Path(out)
    data = {}
    for name, images, data_seed in (("train", train_images, 1), ("val", val_images, 2)):
        data[name] = synthetic_set(out / "data" / name, images, data_seed)
    common = {"train_ann": data["train"][0], "train_images": data["train"][1], "space": "cpu", "batch_size": 8,
              "workers": 1, "seed": seed, "tag_radius": 1,
              "augment": False}  # the generator randomises the scenes; see nas/app/configs/baseline.yaml
    cfg = SupernetConfig.from_dict({**common, "val_ann": data["val"][0], "val_images": data["val"][1],
                                    "time_budget_min": minutes, "eval_archs": [],
                                    "checkpoint_every": 50})
    log = train_supernet(cfg, out / "supernet")
    supernet = TrainedSupernet.load(out / "supernet" / CHECKPOINT, seed=seed)
    space, ckpt = supernet.space, supernet.record
    steps_per_epoch = train_images // cfg.batch_size
    epochs = max(1, round(ckpt["position"]["step"] / steps_per_epoch))
    archs = {name: space.preset(name) for name in PRESETS}
    archs.update({f"random{i}": a for i, a in enumerate(spread_subnets(space, extra_subnets, seed))})
    table = inherited_vs_standalone(supernet, archs, {**common, "val_ann": data["val"][0],
                                                      "val_images": data["val"][1]}, epochs, out)
    tau = kendalltau(table["inherited_AP"], table["standalone_AP"]).statistic
    presets = table[table["subnet"].isin(PRESETS)]
    wins = int((presets["inherited_AP"] >= presets["standalone_AP"]).sum())
    summary = {"supernet_minutes": ckpt["train_seconds"] / 60, "supernet_steps": ckpt["position"]["step"],
               "epochs": epochs, "phases_done": ckpt["position"]["phase"],
               "schedule_scale": ckpt.get("schedule_scale", 1.0), "kendall_tau": float(tau),
               "presets_inherited_at_least_standalone": wins, "presets": len(presets), "subnets": len(table),
               "log": log[-3:]}
    write_json(out / "summary.json", summary, indent=1)
    plot(table, summary, out / "inherited_vs_standalone.png")
    return summary


def plot(table: pd.DataFrame, summary: dict, path: Path) -> None:
    fig, ax = subplots(figsize=(5.5, 5))
    ax.scatter(table["standalone_AP"], table["inherited_AP"], c=table["macs"] / 1e6, cmap="viridis")
    for _, row in table.iterrows():
        ax.annotate(row["subnet"], (row["standalone_AP"], row["inherited_AP"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    against_diagonal(ax, table["standalone_AP"], table["inherited_AP"], ls="--", label="inherited = stand-alone")
    ax.set_xlabel(f"stand-alone AP ({summary['epochs']} epochs)")
    ax.set_ylabel("inherited AP (BN recalibrated)")
    ax.set_title(f"Kendall tau {summary['kendall_tau']:.2f}; presets inherited >= alone: "
                 f"{summary['presets_inherited_at_least_standalone']}/{summary['presets']}", fontsize=9)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, path)
