"""Train one static network of an arch config alone: checkpoints every epoch, exact resume, CSV log, curves."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nas.pose.dataset import CocoPoseDataset, quiet_coco
from nas.train.device import autocast, batch_to, select_device
from nas.errors import PoseNASError
from nas.pose.evaluate import evaluate
from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler
from nas.pose.inference import detect, to_coco_results
from nas.io import atomic_write, read_checkpoint, remove_stale_temp_files, write_text
from nas.pose.keypoints import KeypointSpec
from nas.pose.losses import distillation_loss, heatmaps
from nas.train.settings import Settings, warmup_cosine
from nas.pose.transforms import Augment
from search_spaces import SearchSpace
from supernet.network import build_static, new_static
from supernet.tokens import joint_mask

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig(Settings):
    arch: str | dict = "litepose_xs"  # a preset name of the space, an arch JSON path, or the config itself
    epochs: int = 7
    lr: float = 4e-3
    warmup_epochs: float = 1.0
    val_every: int = 2


def spec_mask(spec: KeypointSpec):
    """The token stage's joint mask for a dataset: skeleton neighbours and mirror joints."""
    return joint_mask(spec.num_keypoints, spec.skeleton, list(enumerate(spec.flip_index)))


def build_network(cfg: TrainConfig, spec: KeypointSpec) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised static network for the run's arch config, and that config."""
    arch = SearchSpace.load(cfg.space).resolve(cfg.arch)
    return new_static(arch, spec.num_keypoints, spec_mask(spec)), arch


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A trained network and its checkpoint record, loaded without unpickling arbitrary objects."""
    ckpt = read_checkpoint(path, ("arch", "model"), "training checkpoint", device)
    return build_static(ckpt["arch"], ckpt["model"]).to(device), ckpt


def evaluate_network(net: torch.nn.Module, ds: CocoPoseDataset, size: int, flip_test: bool = False,
                     limit: int | None = None, batch: int = 8, device: torch.device | str = "cpu",
                     progress: bool = False) -> tuple[dict[str, float], list[dict]]:
    """COCO AP of a network on (the first ``limit`` images of) a dataset."""
    ids = ds.image_ids[:limit] if limit else ds.image_ids
    net.eval()
    results = []
    for start in tqdm(range(0, len(ids), batch), desc="eval", disable=not progress, leave=False):
        chunk = ids[start:start + batch]
        people = detect(net, [ds.load_image(i) for i in chunk], size, ds.spec, flip_test, device=device)
        for image_id, (kps, scores) in zip(chunk, people):
            results += to_coco_results(image_id, kps, scores)
    gt = ds.coco
    if limit:
        keep = set(ids)
        gt = quiet_coco({**ds.coco.dataset, "images": [i for i in ds.coco.dataset["images"] if i["id"] in keep],
                         "annotations": [a for a in ds.coco.dataset["annotations"] if a["image_id"] in keep]})
    return evaluate(gt, results, ds.spec), results


def plot_curves(log: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for col in ("loss", "heatmap", "pull", "push"):
        a.plot(log["epoch"], log[col], label=col)
    a.set_yscale("log"); a.set_xlabel("epoch"); a.set_ylabel("training loss"); a.legend(); a.grid(alpha=0.3)
    if "AP" in log:
        val = log.dropna(subset=["AP"])
        b.plot(val["epoch"], val["AP"], "o-", label="AP")
        b.plot(val["epoch"], val["AP50"], "s--", label="AP50")
        b.legend()
    b.set_xlabel("epoch"); b.set_ylabel("validation COCO AP"); b.set_ylim(0, 1); b.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def train(cfg: TrainConfig, out: str | Path, progress: bool = True, init: dict | None = None,
          teacher: torch.nn.Module | None = None) -> dict:
    """Train (or resume) into ``out``; returns the final validation metrics (empty without val data).

    ``init`` starts from given weights (a subnet's inherited ones) instead of a fresh network;
    with a ``teacher``, its heatmaps are targets too (weighted by ``distill_weight``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_ds, val_ds = cfg.datasets()
    k = train_ds.spec.num_keypoints
    net, arch = build_network(cfg, train_ds.spec)
    if init is not None:
        net.load_state_dict(init)
    net = net.to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval()
    size = arch["resolution"]
    strides = (4, 2) if arch["head"]["multi_resolution"] else (4,)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=True)
    train_set = PoseTrainSet(train_ds, strides, Augment() if cfg.augment else None, cfg.seed, cfg.tag_radius)
    sampler = ResolutionBatchSampler(len(train_ds), cfg.batch_size, (size,), seed=cfg.seed)
    if len(sampler) == 0:
        raise PoseNASError(f"{cfg.train_ann}: {len(train_ds)} images is fewer than one batch of {cfg.batch_size}")
    loader_kw = dict(batch_sampler=sampler, num_workers=cfg.workers, pin_memory=device.type == "cuda")
    start_epoch, step, spent, log = 0, 0, 0.0, []
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, step, spent = ckpt["epoch"], ckpt["step"], ckpt["train_seconds"]
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        log = ckpt["log"]
        print(f"resuming {out} at epoch {start_epoch} (step {step})")

    def budget_spent(extra: float = 0.0) -> bool:
        return cfg.time_budget_min is not None and spent + extra >= cfg.time_budget_min * 60

    final: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        if budget_spent():
            print(f"time budget of {cfg.time_budget_min} min spent; stopping before epoch {epoch + 1}")
            break
        net.train()
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        sums, batches = np.zeros(4), 0
        t0 = time.time()
        bar = tqdm(DataLoader(train_set, **loader_kw), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        warmup = max(1, int(cfg.warmup_epochs * len(sampler)))
        for batch in bar:
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(cfg.lr, step, cfg.epochs * len(sampler), warmup)
            images, heats, masks, joints = batch_to(batch, device)
            with autocast(device):
                outputs = net(images)
            outputs = [o.float() for o in outputs]
            loss, h_loss, pull, push = cfg.pose_loss(outputs, heats, masks, joints, k)
            if teacher is not None:
                with torch.no_grad(), autocast(device):
                    targets = heatmaps([o.float() for o in teacher(images)], k)
                loss = loss + cfg.distill_weight * distillation_loss(outputs, targets, masks, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            batches += 1
            sums += [loss.item(), h_loss.item(), pull.item(), push.item()]
            bar.set_postfix(loss=f"{loss.item():.2e}", lr=f"{opt.param_groups[0]['lr']:.1e}")
            if budget_spent(time.time() - t0):  # checked every step: the budget is a hard limit
                print(f"time budget of {cfg.time_budget_min} min spent in epoch {epoch + 1} (step {step})")
                break
        spent += time.time() - t0
        row = {"epoch": epoch + 1, "step": step, "train_seconds": round(spent, 1), "lr": opt.param_groups[0]["lr"],
               **dict(zip(("loss", "heatmap", "pull", "push"), (sums / max(1, batches)).tolist()))}
        last = epoch + 1 == cfg.epochs or budget_spent()
        if val_ds is not None and ((epoch + 1) % cfg.val_every == 0 or last):
            metrics, _ = evaluate_network(net, val_ds, size, cfg.flip_test,
                                          None if last else cfg.val_limit, device=device)
            row.update(metrics)
            final = metrics
        log.append(row)
        print(" ".join(f"{name}={v:.4g}" if isinstance(v, float) else f"{name}={v}" for name, v in row.items()))
        state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                 "train_seconds": spent, "torch_rng": torch.get_rng_state(), "log": log,
                 "arch": arch, "train_config": asdict(cfg), "spec": train_ds.spec.name}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        frame = pd.DataFrame(log)
        write_text(out / "log.csv", frame.to_csv(index=False))
        plot_curves(frame, out / "curves.png")
    if not final and log and "AP" in log[-1]:  # resumed a finished run: report its last evaluation
        final = {k: v for k, v in log[-1].items() if k.startswith("A")}
    return final
