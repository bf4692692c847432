"""`posenas zoo build`: train a supernet once (resumable, for as long as it takes), judge it, and
pack it as a zoo entry whose card a user can check with `posenas eval-subnet`.

The card's APs are measured on the packed (fp16) weights, recalibrated on the images a user's
`zoo:NAME` regenerates, so they are exactly what the user gets; the largest subnet is also
evaluated in fp32 to show that fp16 storage changes nothing.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from nas.app.pipeline import check_user_data, load_run_config, make_data, supernet_config
from nas.app.runs import RunLayout
from nas.errors import FolderInUse, PoseNASError
from nas.io import read_checkpoint, read_json, write_json, write_text
from nas.pose.dataset import CocoPoseDataset, set_files
from nas.search.predictor_build import PREDICTOR, build_accuracy_predictor
from nas.subnet import zoo
from nas.subnet.inherit import CALIBRATION_IMAGES, TrainedSupernet
from nas.train.supernet import train_supernet
from search_spaces import SearchSpace, arch_hash
from supernet.cost import arch_cost

STANDALONE = Path("ranking") / "standalone"  # the ranking's subnets trained alone, under the run folder


def hardware() -> str:
    """The machine, not the threads of the moment: an entry trains over many sessions and is packed
    by a process whose torch threads follow the load."""
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores{gpu}"


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def build_entry(config: str, out: str | Path, into: str | Path | None = None, half: bool = True,
                predictor_samples: int = 200, standalone: int = 8, standalone_epochs: float = 1,
                predictor_workers: int = 1, predictor_near_front: int = 0) -> dict:
    """Train (or resume) the run config's supernet into ``out``, rank ``standalone`` subnets
    against the same subnets trained alone (0: skip), write the entry to ``into`` (default
    ``out/zoo/NAME``), and fit its accuracy predictor on ``predictor_samples`` subnets (0: none)
    and ``predictor_near_front`` more near the AP-MACs front,
    scored on the whole validation set as the card's figures are (two halves of 100 images rank
    the entry's subnets at Kendall's tau 0.72 only: noise no predictor can learn); returns its card."""
    cfg, run, supernet_cfg = prepare_run(config, out)
    data = cfg.get("data", {})
    log = train_supernet(supernet_cfg, run.supernet.parent)
    ckpt = read_checkpoint(run.supernet, ("supernet", "space", "position"), "supernet checkpoint")
    card = {"name": cfg["name"], "space_name": supernet_cfg.space, "space": ckpt["space"], "spec": ckpt["spec"],
            "num_keypoints": ckpt["num_keypoints"],
            "data": {"kind": "synthetic", "train_images": data.get("train_images", 1000),
                     "train_seed": data.get("train_seed", 1), "size": list(data.get("size", (256, 256))),
                     "val_images": data.get("val_images", 100), "val_seed": data.get("val_seed", 2)},
            "training": {"config": str(config), "command": f"posenas zoo build {config} --out {out}",
                         "steps": ckpt["position"]["step"], "phases_done": ckpt["position"]["phase"],
                         "train_hours": round(ckpt["train_seconds"] / 3600, 2), "hardware": hardware(),
                         "commit": commit(), "settings": ckpt["config"],
                         **({"continues": ckpt["continues"]} if ckpt.get("continues") else {})}}
    shipped = shipped_supernet(ckpt, card, torch.float16 if half else torch.float32)
    card["evaluation"] = evaluate_entry(shipped, run)
    if half:  # fp16 storage is fine if the inherited APs do not change
        card["evaluation"]["max_fp32_AP"] = evaluate_entry(shipped_supernet(ckpt, card, torch.float32), run,
                                                           ["max"])["inherited"][0]["AP"]
    if standalone:
        card["standalone"] = rank_against_standalone(shipped, run, supernet_cfg, standalone, standalone_epochs)
    folder = Path(into) if into else run.root / "zoo" / cfg["name"]
    card = zoo.write_entry(folder, ckpt["supernet"], card, pd.DataFrame(log).to_csv(index=False), half)
    if predictor_samples:
        report = build_accuracy_predictor(str(folder), set_files(run.data("val")), run.root / "predictor",
                                          predictor_samples, eval_images=card["data"]["val_images"],
                                          workers=predictor_workers, near_front_samples=predictor_near_front)
        write_text(folder / zoo.PREDICTOR, (run.root / "predictor" / PREDICTOR).read_text(encoding="utf-8"))
        card = {**card, "accuracy_predictor": {k: report[k] for k in ("model", "subnets", "held_out_scores")}}
        write_json(folder / zoo.CARD, card, indent=1)
    return card


def prepare_run(config: str, out: str | Path):
    """The zoo config, its run folder (data made) and its supernet training config."""
    cfg = load_run_config(config)
    if "name" not in cfg or "/" in str(cfg["name"]):
        raise PoseNASError(f"{config}: a zoo config needs a name (one word: the entry is zoo:NAME)")
    run = RunLayout(Path(out))
    supernet_cfg = supernet_config(cfg, run, config)
    check_user_data(run, cfg.get("data", {}))
    make_data(run, cfg.get("data", {}))
    return cfg, run, supernet_cfg


def train_ranking_alone(config: str, out: str | Path, count: int = 8, epochs: float = 1) -> dict[str, float]:
    """The stand-alone half of the card's ranking: the ``count`` subnets trained alone on the run's
    data, independent of the supernet, so it can run beside the supernet's training (another core,
    another machine); ``build_entry`` then finds them done. A subnet another process trains is
    left to it: the same command run N times trains N subnets at once. Returns each AP it got."""
    from nas.app.bench_supernet import train_alone

    _, run, supernet_cfg = prepare_run(config, out)
    settings, folder = standalone_settings(supernet_cfg), run.root / STANDALONE
    archs = sorted(ranking_archs(SearchSpace.load(supernet_cfg.space), count, folder).items(),
                   key=lambda item: arch_cost(item[1]).macs)  # the cheapest first: results come sooner
    aps = {}
    for name, arch in archs:
        try:
            aps[name] = train_alone(arch, settings, epochs, folder / name)
        except FolderInUse:
            print(f"{name}: trained alone by another process; going on with the next")
    return aps


def shipped_supernet(ckpt: dict, card: dict, dtype: torch.dtype) -> TrainedSupernet:
    """The checkpoint's supernet with its weights stored as ``dtype`` and read back, recalibrated as
    ``zoo:NAME`` will be."""
    state = {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in ckpt["supernet"].items()}
    return TrainedSupernet.from_state(ckpt, state, zoo.regenerated(card, CALIBRATION_IMAGES),
                                      source="supernet checkpoint")


def evaluate_entry(shipped: TrainedSupernet, run: RunLayout, names: list[str] | None = None) -> dict:
    """Inherited AP of ``names`` (default min, max and every preset) on the run's validation set;
    by default, in a space of several head types, also each preset's backbone under every other
    head (its own keys at their largest, as ``--head`` gives it): the heads on the same weights."""
    space, val = shipped.space, CocoPoseDataset(*set_files(run.data("val")))
    presets = {name: space.resolve(name) for name in names or space.preset_names()}
    others = [] if names else [(name, space.with_head(arch, head)) for name, arch in presets.items()
                               for head in space.choices("head.type") if head != arch["head"]["type"]]
    rows = []
    for name, arch in tqdm([*presets.items(), *others], desc="inherited AP"):
        rows.append({"subnet": name, "head": arch["head"]["type"],
                     "AP": round(shipped.evaluate(arch, val)["AP"], 4),
                     "macs": arch_cost(arch, shipped.num_keypoints).macs, "resolution": arch["resolution"],
                     "arch_hash": arch_hash(arch)})
    inherited, other_heads = rows[:len(presets)], rows[len(presets):]
    return {"val_images": len(val), "calibration_images": CALIBRATION_IMAGES, "inherited": inherited,
            **({"other_heads": other_heads} if other_heads else {})}


def rank_against_standalone(shipped: TrainedSupernet, run: RunLayout, supernet_cfg, count: int,
                            epochs: float) -> dict:
    """Kendall's tau between inherited APs and stand-alone APs of the presets and subnets spread
    over the MACs range (``count`` in all), each trained alone for ``epochs`` on the run's data."""
    from scipy.stats import kendalltau

    from nas.app.bench_supernet import inherited_vs_standalone

    table = inherited_vs_standalone(shipped, ranking_archs(shipped.space, count, run.root / STANDALONE),
                                    standalone_settings(supernet_cfg), epochs, run.root / "ranking")
    return {"kendall_tau": float(kendalltau(table["inherited_AP"], table["standalone_AP"]).statistic),
            "subnets": len(table), "epochs": epochs,
            "table": table.drop(columns="supernet").round(4).to_dict("records")}


def ranking_archs(space, count: int, trained: Path | None = None) -> dict[str, dict]:
    """The presets (one name per network: two presets a space resolves alike are one subnet), then
    subnets spread over the MACs range: ``count`` distinct subnets in all. A spread subnet whose
    stand-alone record under ``trained`` holds its config stays the one ranked: a sampler that
    draws differently since (a space that gained dimensions) does not throw away hours of training."""
    from nas.search.predictor_build import spread_subnets

    archs = {}
    for name in space.preset_names():
        arch = space.resolve(name)
        if len(archs) < count and arch_hash(arch) not in {arch_hash(a) for a in archs.values()}:
            archs[name] = arch
    for i, arch in enumerate(spread_subnets(space, max(0, count - len(archs)))):
        records = sorted((trained / f"spread{i}").glob("epochs-*/result.json")) if trained else []
        saved = read_json(records[0], "stand-alone record") if records else {}
        archs[f"spread{i}"] = space.validate(saved["arch"], str(records[0])) if "arch" in saved else arch
    return archs


def standalone_settings(supernet_cfg) -> dict:
    """What a subnet trained alone shares with the supernet's training: data, space, batch, seed."""
    return {k: getattr(supernet_cfg, k) for k in ("train_ann", "train_images", "val_ann", "val_images", "space",
                                                  "batch_size", "workers", "seed", "tag_radius", "augment")}
