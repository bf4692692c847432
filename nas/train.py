"""Train a static bottom-up network: checkpoints every epoch, exact resume, CSV log and curves."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nas.dataset import CocoPoseDataset, quiet_coco
from nas.device import autocast, select_device
from nas.errors import PoseNASError
from nas.evaluate import evaluate
from nas.examples import PoseTrainSet, ResolutionBatchSampler
from nas.inference import detect, to_coco_results
from nas.io import atomic_write, write_text
from nas.losses import ae_loss, heatmap_loss
from nas.transforms import Augment
from supernet.litepose import LitePoseConfig, LitePoseNet

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    train_ann: str
    train_images: str
    val_ann: str | None = None
    val_images: str | None = None
    spec: str | None = None
    input_size: int = 256
    batch_size: int = 8
    epochs: int = 7
    lr: float = 4e-3
    warmup_epochs: float = 1.0
    ae_weight: float = 1e-3
    background_weight: float = 1.0  # heatmap loss weight away from joints (1.0: plain masked MSE)
    tag_radius: int = 1  # pull tags over the (2r+1)^2 pixels around each joint (0: the joint's pixel)
    workers: int = 1
    seed: int = 0
    val_every: int = 2
    val_limit: int | None = 200  # images evaluated between epochs; the final evaluation uses all
    flip_test: bool = False
    augment: bool = True  # random affine + flip; off to overfit a few images
    time_budget_min: float | None = None  # stop (and evaluate) once this much training time is spent
    device: str = "auto"
    model: dict = field(default_factory=lambda: LitePoseConfig().to_dict())

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise PoseNASError(f"{source}: unknown training setting(s) {unknown}; known: {sorted(known)}")
        expected = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict": dict}
        for name, value in d.items():
            kind = expected.get(str(known[name].type).split(" | ")[0])
            if value is not None and kind and (not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)):
                raise PoseNASError(f"{source}: setting {name!r} must be {known[name].type}, got {value!r}")
        return cls(**d)


def build_model(model: dict, num_keypoints: int) -> LitePoseNet:
    try:
        return LitePoseNet(LitePoseConfig.from_dict({**model, "num_keypoints": num_keypoints}))
    except (TypeError, KeyError, ValueError) as e:
        raise PoseNASError(f"model settings {model}: {e}") from None


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[LitePoseNet, dict]:
    """A trained network and its checkpoint record, loaded without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise PoseNASError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise PoseNASError(f"{path}: not a readable PoseNAS checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model" not in ckpt:
        raise PoseNASError(f"{path}: not a PoseNAS training checkpoint (no model_config/model)")
    net = LitePoseNet(LitePoseConfig.from_dict(ckpt["model_config"])).to(device)
    net.load_state_dict(ckpt["model"])
    return net.eval(), ckpt


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


def _lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up then cosine decay to zero over all epochs."""
    total = cfg.epochs * steps_per_epoch
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


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


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> dict:
    """Train (or resume) into ``out``; returns the final validation metrics (empty without val data)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_ds = CocoPoseDataset(cfg.train_ann, cfg.train_images, cfg.spec)
    val_ds = CocoPoseDataset(cfg.val_ann, cfg.val_images, cfg.spec) if cfg.val_ann else None
    k = train_ds.spec.num_keypoints
    net = build_model(cfg.model, k).to(device)
    strides = (4, 2) if net.cfg.high_res_output else (4,)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    train_set = PoseTrainSet(train_ds, strides, Augment() if cfg.augment else None, cfg.seed, cfg.tag_radius)
    sampler = ResolutionBatchSampler(len(train_ds), cfg.batch_size, (cfg.input_size,), seed=cfg.seed)
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
    def budget_spent() -> bool:
        return cfg.time_budget_min is not None and spent >= cfg.time_budget_min * 60

    final: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        if budget_spent():
            print(f"time budget of {cfg.time_budget_min} min spent; stopping before epoch {epoch + 1}")
            break
        net.train()
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        sums = np.zeros(4)
        t0 = time.time()
        bar = tqdm(DataLoader(train_set, **loader_kw), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        for images, heats, masks, joints in bar:
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, step, len(sampler))
            images = images.to(device, non_blocking=True)
            if device.type == "cpu":
                images = images.contiguous(memory_format=torch.channels_last)
            heats = [h.to(device) for h in heats]
            masks = [m.to(device) for m in masks]
            with autocast(device):
                outputs = net(images)
            outputs = [o.float() for o in outputs]
            preds = [outputs[0][:, :k]] + outputs[1:]
            h_loss = heatmap_loss(preds, heats, masks, cfg.background_weight)
            pull, push = ae_loss(outputs[0][:, k:2 * k], joints.to(device))
            loss = h_loss + cfg.ae_weight * (pull + push)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            sums += [loss.item(), h_loss.item(), pull.item(), push.item()]
            bar.set_postfix(loss=f"{loss.item():.2e}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        spent += time.time() - t0
        row = {"epoch": epoch + 1, "step": step, "train_seconds": round(spent, 1), "lr": opt.param_groups[0]["lr"],
               **dict(zip(("loss", "heatmap", "pull", "push"), (sums / len(sampler)).tolist()))}
        last = epoch + 1 == cfg.epochs or budget_spent()
        if val_ds is not None and ((epoch + 1) % cfg.val_every == 0 or last):
            metrics, _ = evaluate_network(net, val_ds, cfg.input_size, cfg.flip_test,
                                          None if last else cfg.val_limit, device=device)
            row.update(metrics)
            final = metrics
        log.append(row)
        print(" ".join(f"{name}={v:.4g}" if isinstance(v, float) else f"{name}={v}" for name, v in row.items()))
        state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "step": step,
                 "train_seconds": spent, "torch_rng": torch.get_rng_state(), "log": log,
                 "model_config": net.cfg.to_dict(), "train_config": asdict(cfg), "spec": train_ds.spec.name,
                 "input_size": cfg.input_size}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        frame = pd.DataFrame(log)
        write_text(out / "log.csv", frame.to_csv(index=False))
        plot_curves(frame, out / "curves.png")
    if not final and log and "AP" in log[-1]:  # resumed a finished run: report its last evaluation
        final = {k: v for k, v in log[-1].items() if k.startswith("A")}
    return final
