"""Train one static network of an arch config alone: checkpoints every epoch, exact resume, CSV log, curves."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from nas.config import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from nas.errors import PoseNASError
from nas.io import writer_lock
from nas.pose.codecs import codec_of
from nas.pose.evaluate import evaluate_network
from nas.pose.keypoints import KeypointSpec
from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler
from nas.pose.transforms import Augment
from nas.train.checkpoint import RunFolder
from nas.train.curves import plot_curves
from nas.train.device import autocast, batch_to, select_device
from nas.train.schedule import warmup_cosine
from nas.train.settings import Settings, datasets
from search_spaces import SearchSpace, arch_hash
from supernet.network import new_static
from supernet.tokens import joint_mask

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig(Settings):
    arch: str | dict = "litepose_xs"  # a preset name of the space, an arch JSON path, or the config itself
    epochs: float = 7  # a fraction ends the last epoch early (a short stand-alone ranking, say)
    lr: float = 4e-3
    warmup_epochs: float = 1.0
    val_every: int = 2
    checkpoint_every: int = 0  # steps between checkpoints within an epoch (0: at each epoch's end only)

    RANGES = {**Settings.RANGES, "epochs": POSITIVE, "lr": POSITIVE, "warmup_epochs": NON_NEGATIVE,
              "val_every": AT_LEAST_ONE, "checkpoint_every": NON_NEGATIVE}


def spec_mask(spec: KeypointSpec) -> torch.Tensor:
    """The token stage's joint mask for a dataset: skeleton neighbours and mirror joints."""
    return joint_mask(spec.num_keypoints, spec.skeleton, list(enumerate(spec.flip_index)))


def build_network(cfg: TrainConfig, spec: KeypointSpec) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised static network for the run's arch config, and that config."""
    arch = SearchSpace.load(cfg.space).resolve(cfg.arch)
    return new_static(arch, spec.num_keypoints, spec_mask(spec)), arch


def plot_training(log, path: Path) -> None:
    plot_curves(log, path, "epoch", {c: c for c in ("loss", "heatmap", "pull", "push")},
                {"AP": "AP", "AP50": "AP50"})


def train(cfg: TrainConfig, out: str | Path, progress: bool = True, init: dict | None = None,
          teacher: torch.nn.Module | None = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Train (or resume) into ``out``, its only writer; returns the final validation metrics
    (empty without val data).

    ``init`` starts from given weights (a subnet's inherited ones) instead of a fresh network;
    with a ``teacher``, its heatmaps are targets too (weighted by ``distill_weight``). ``clock``
    (seconds) measures the time budget."""
    with writer_lock(out):
        return _train(cfg, out, progress, init, teacher, clock)


def _train(cfg: TrainConfig, out: str | Path, progress: bool, init: dict | None, teacher: torch.nn.Module | None,
           clock: Callable[[], float]) -> dict:
    folder = RunFolder(out, CHECKPOINT, plot_training)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_ds, val_ds = datasets(cfg)
    k = train_ds.spec.num_keypoints
    net, arch = build_network(cfg, train_ds.spec)
    if init is not None:
        net.load_state_dict(init)
    net = net.to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        teacher_codec = codec_of(teacher.arch)
    size = arch["resolution"]
    strides = (4, 2) if arch["head"]["multi_resolution"] else (4,)
    codec = codec_of(arch)
    sigmas = torch.as_tensor(train_ds.spec.sigmas, dtype=torch.float32, device=device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=True)
    train_set = PoseTrainSet(train_ds, strides, Augment() if cfg.augment else None, cfg.seed, cfg.tag_radius)
    sampler = ResolutionBatchSampler(len(train_ds), cfg.batch_size, (size,), seed=cfg.seed)
    if len(sampler) == 0:
        raise PoseNASError(f"{cfg.train_ann}: {len(train_ds)} images is fewer than one batch of {cfg.batch_size}")
    loader_kw = dict(batch_sampler=sampler, num_workers=cfg.workers, pin_memory=device.type == "cuda")
    start_epoch, step, spent, log, done_in_epoch, sums, batches = 0, 0, 0.0, [], 0, np.zeros(4), 0
    ckpt = folder.resume(device)
    if ckpt is not None:
        if ckpt.get("arch") is not None and arch_hash(ckpt["arch"]) != arch_hash(arch):
            raise PoseNASError(f"{out}: holds the checkpoint of another network (arch {arch_hash(ckpt['arch'])}, "
                               f"not {arch_hash(arch)}); write elsewhere or remove it")
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, step, spent, log = ckpt["epoch"], ckpt["step"], ckpt["train_seconds"], ckpt["log"]
        done_in_epoch, batches = ckpt.get("batch", 0), ckpt.get("batches", 0)  # a checkpoint within an epoch
        sums = np.asarray(ckpt.get("sums", np.zeros(4)), dtype=float)
        within = f", batch {done_in_epoch}" if done_in_epoch else ""
        print(f"resuming {out} at epoch {start_epoch}{within} (step {step})")

    def save(epoch: int, done: int) -> None:
        """A checkpoint after ``done`` batches of ``epoch`` (0-based; the next epoch with none)."""
        folder.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "batch": done,
                     "sums": sums.tolist(), "batches": batches, "step": step, "train_seconds": spent,
                     "arch": arch, "train_config": asdict(cfg), "spec": train_ds.spec.name,
                     "synthetic": train_ds.synthetic}, log)

    def budget_spent(extra: float = 0.0) -> bool:
        return cfg.time_budget_min is not None and spent + extra >= cfg.time_budget_min * 60

    final: dict = {}
    total_steps = max(1, round(cfg.epochs * len(sampler)))
    for epoch in range(start_epoch, math.ceil(cfg.epochs)):
        if budget_spent():
            print(f"time budget of {cfg.time_budget_min} min spent; stopping before epoch {epoch + 1}")
            break
        net.train()
        start = done_in_epoch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, start)
        train_set.epoch = epoch
        if start == 0:
            sums, batches = np.zeros(4), 0
        t0 = clock()
        bar = tqdm(DataLoader(train_set, **loader_kw), desc=f"epoch {epoch + 1}/{cfg.epochs:g}",
                   disable=not progress, leave=False, total=min(len(sampler) - start, total_steps - step))
        warmup = max(1, int(cfg.warmup_epochs * len(sampler)))
        for batch in bar:
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(cfg.lr, step, total_steps, warmup)
            batch = batch_to(batch, device)
            loss, parts, outputs = codec.loss(net, batch, cfg, sigmas, lambda: autocast(device))
            if teacher is not None and codec.distils:
                images, masks = batch[0], batch[2]
                with torch.no_grad(), autocast(device):
                    targets = teacher_codec.teacher_maps([o.float() for o in teacher(images)], k)
                loss = loss + cfg.distill_weight * codec.distillation(outputs, targets, masks, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            batches += 1
            sums += [loss.item(), *(part.item() for part in parts)]
            bar.set_postfix(loss=f"{loss.item():.2e}", lr=f"{opt.param_groups[0]['lr']:.1e}")
            if step >= total_steps:
                break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                spent += clock() - t0
                t0 = clock()
                save(epoch, batches)
            if budget_spent(clock() - t0):  # checked every step: the budget is a hard limit
                print(f"time budget of {cfg.time_budget_min} min spent in epoch {epoch + 1} (step {step})")
                break
        spent += clock() - t0
        row = {"epoch": epoch + 1, "step": step, "train_seconds": round(spent, 1), "lr": opt.param_groups[0]["lr"],
               **dict(zip(("loss", "heatmap", "pull", "push"), (sums / max(1, batches)).tolist()))}
        last = step >= total_steps or budget_spent()
        if val_ds is not None and ((epoch + 1) % cfg.val_every == 0 or last):
            metrics, _ = evaluate_network(net, val_ds, size, cfg.flip_test,
                                          None if last else cfg.val_limit, device=device)
            row.update(metrics)
            final = metrics
        log.append(row)
        print(" ".join(f"{name}={v:.4g}" if isinstance(v, float) else f"{name}={v}" for name, v in row.items()))
        sums, batches = np.zeros(4), 0
        save(epoch + 1, 0)
    if not final and log and "AP" in log[-1]:  # resumed a finished run: report its last evaluation
        final = {k: v for k, v in log[-1].items() if k.startswith("A")}
    return final
