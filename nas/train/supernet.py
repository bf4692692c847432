"""Train the once-for-all supernet: progressive shrinking, sandwich rule, in-place distillation.

Phases open the space's elastic groups one after another, as OFA does (largest network first,
then resolution and kernel, depth, width, token stage). Every step runs the sandwich: the largest
subnet learns from the labels; the smallest and ``sandwich_random`` random subnets (among the
open groups) learn from the labels and from the largest subnet's heatmaps. Each subnet makes its
own optimizer step (or, with ``sandwich_update: accumulate``, the whole sandwich one). The largest
learns at the space's largest input size while the others take the batch's (BigNAS). Under a
time budget, the phase in which the budget would run out is shortened, from the pace of its own
steps, so that its learning rate still anneals to zero when the budget ends (a phase cut in its
warm-up leaves every subnet worse); ``fit_budget`` shortens all phases by one factor, from step
times probed before training, so that every phase runs. Checkpoints are atomic and hold the
phase, epoch, batch and step, so a killed run resumes where its last checkpoint stopped.
"""
from __future__ import annotations

import copy
import hashlib
import math
import random
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from nas.train import distributed
from nas.subnet.calibration import CalibrationSet
from nas.train.device import autocast, batch_to, select_device
from nas.errors import PoseNASError
from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler, TeacherPairs
from nas.io import atomic_write, remove_stale_temp_files, write_text
from nas.pose.losses import distillation_loss, heatmaps
from nas.train.settings import Settings, is_kind, warmup_cosine
from nas.subnet.inherit import evaluate_subnet
from nas.train.static import spec_mask
from nas.pose.transforms import Augment
from search_spaces import SearchSpace
from search_spaces.space import GROUPS
from supernet.importance import sort_hidden_channels
from supernet.network import PoseNet

CHECKPOINT = "supernet.pt"
PHASE_LR = 6e-3  # every default phase, and any phase that names none: the GPU schedule sweep in the README
DEFAULT_PHASES = ({"name": "largest", "epochs": 2, "lr": PHASE_LR, "elastic": []},) + tuple(
    {"name": name, "epochs": 1, "lr": PHASE_LR, "warmup_epochs": 0.1, "elastic": list(GROUPS[:opened])}
    for name, opened in (("resolution+kernel", 2), ("depth", 3), ("width", 4), ("token", 5)))  # one group more each


PHASE_KEYS = ("epochs", "name", "lr", "elastic", "warmup_epochs")
SANDWICH_UPDATES = ("sequential", "accumulate")
TEACHER_INPUTS = ("largest", "batch")
PACE_STEPS = 5  # steps of a phase timed before its pace may shorten it to fit a time budget


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: float  # fractional epochs end a phase mid-epoch
    lr: float
    elastic: tuple[str, ...]
    warmup_epochs: float  # linear warm-up from zero: every phase starts a fresh Adam


@dataclass
class SupernetConfig(Settings):
    phases: list = field(default_factory=lambda: [dict(p) for p in DEFAULT_PHASES])
    sandwich_random: int = 2  # random subnets per step besides the largest and the smallest
    sandwich_update: str = "sequential"  # one Adam step per subnet of the sandwich, or one for all ("accumulate")
    teacher_input: str = "largest"  # the largest subnet's input size: the space's largest, or the batch's (OFA)
    warmup_epochs: float = 0.5  # linear warm-up of the first phase (the others set their own, default none)
    checkpoint_every: int = 200  # steps between checkpoints (and at every epoch's end)
    calibration_images: int = 64  # training images for BN recalibration
    eval_archs: list = field(default_factory=lambda: ["max", "min"])  # evaluated at each phase's end
    # with time_budget_min: shorten every phase alike so that the schedule fills this fraction of the budget
    # (the rest absorbs checkpoints and timing noise); null: the phase in which the budget ends is the last
    fit_budget: float | None = None

    def __post_init__(self):
        if self.sandwich_update not in SANDWICH_UPDATES:
            raise PoseNASError(f"sandwich_update {self.sandwich_update!r} unknown; use one of {list(SANDWICH_UPDATES)}")
        if self.teacher_input not in TEACHER_INPUTS:
            raise PoseNASError(f"teacher_input {self.teacher_input!r} unknown; use one of {list(TEACHER_INPUTS)}")
        if self.fit_budget is not None and not 0 < self.fit_budget <= 1:
            raise PoseNASError(f"fit_budget must lie in (0, 1] or be null, got {self.fit_budget!r}")

    def parsed_phases(self) -> list[Phase]:
        phases = []
        for i, p in enumerate(self.phases):
            where = f"phases[{i}]"
            if not isinstance(p, dict) or set(p) - set(PHASE_KEYS) or "epochs" not in p:
                raise PoseNASError(f"{where} must be a mapping with epochs, and optionally "
                                   f"{', '.join(PHASE_KEYS[1:])}; got {p!r}")
            elastic = tuple(p.get("elastic", ()))
            bad = [g for g in elastic if g not in GROUPS]
            if bad:
                raise PoseNASError(f"{where}.elastic: unknown group {bad[0]!r}; groups: {list(GROUPS)}")
            if not is_kind(p["epochs"], (int, float)) or not p["epochs"] > 0:
                raise PoseNASError(f"{where}.epochs must be a positive number, got {p['epochs']!r}")
            warmup = p.get("warmup_epochs", self.warmup_epochs if i == 0 else 0.0)
            if not is_kind(warmup, (int, float)) or not 0 <= warmup <= p["epochs"]:
                raise PoseNASError(f"{where}.warmup_epochs must lie in [0, epochs], got {warmup!r}")
            phases.append(Phase(str(p.get("name", f"phase{i + 1}")), float(p["epochs"]), float(p.get("lr", PHASE_LR)),
                                elastic, float(warmup)))
        if not phases:
            raise PoseNASError("phases: give at least one phase")
        return phases


def sandwich(space: SearchSpace, groups: tuple[str, ...], rng: random.Random, n_random: int) -> list[dict]:
    """Largest first (the teacher), then the smallest and ``n_random`` random subnets of the open
    groups; with nothing open, the largest alone."""
    if not groups:
        return [space.max()]
    return [space.max(), space.min(groups)] + [space.random(rng, groups) for _ in range(n_random)]


def sandwich_step(net: PoseNet, archs: list[dict], batch, cfg: SupernetConfig, device: torch.device,
                  opt: torch.optim.Optimizer, teacher_batch=None) -> list[float]:
    """Forward and backward every subnet of the sandwich on one batch; returns their losses and
    leaves no gradients behind. The teacher (the first subnet) takes ``teacher_batch`` where given,
    the same scenes at another size; its heatmaps are resized to the students' for distillation.

    ``sequential`` steps the optimizer after each subnet (the teacher's heatmaps are taken before
    its own step), so a sandwich of four makes four updates of the shared weights; on the short
    budgets of a CPU this ranks subnets far better than ``accumulate``, one step for the whole
    sandwich (BigNAS, OFA): Kendall's tau 0.93 against 0.57 in the supernet benchmark."""
    k = net.num_keypoints
    sequential = cfg.sandwich_update == "sequential"
    teacher, losses = None, []
    for i, arch in enumerate(archs):
        images, heats, masks, joints = teacher_batch if i == 0 and teacher_batch is not None else batch
        net.set_active({**arch, "resolution": images.shape[-1]})
        with autocast(device):
            outputs = [o.float() for o in net(images)]
        loss = cfg.pose_loss(outputs, heats, masks, joints, k)[0]
        if teacher is None:
            teacher = [h.detach() if h.shape[-2:] == t.shape[-2:] else  # pixel centres scale with the size
                       F.interpolate(h.detach(), size=t.shape[-2:], mode="bilinear", align_corners=False)
                       for h, t in zip(heatmaps(outputs, k), batch[1])]
        else:
            loss = loss + cfg.distill_weight * distillation_loss(outputs, teacher, masks, k)
        loss.backward()
        losses.append(loss.item())
        if sequential or i == len(archs) - 1:
            distributed.average_gradients(net)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return losses


def pair_to(items: list, device: torch.device) -> tuple:
    """The student batch and the teacher's (None where it is the same) on ``device``, from a
    collated ``TeacherPairs`` batch."""
    *teacher, batch = items
    return batch_to(batch, device), batch_to(teacher[0], device) if teacher else None


def phase_sizes(space: SearchSpace, phase: Phase) -> tuple[int, ...]:
    """Input sizes a phase's batches draw from: every resolution choice once resolution is elastic."""
    return tuple(space.dimensions[0].choices) if "resolution" in phase.elastic else (space.max()["resolution"],)


def probe_step_seconds(net: PoseNet, space: SearchSpace, phases: list[Phase], pairs: TeacherPairs,
                       cfg: SupernetConfig, device: torch.device, steps: int = 4) -> list[float]:
    """Seconds per sandwich step of each phase (building the batch included), timed on a throwaway
    copy of the supernet over ``steps`` steps that cycle through the phase's input sizes."""
    probe, rng, torch_rng = copy.deepcopy(net), random.Random(cfg.seed), torch.get_rng_state()
    opt = torch.optim.Adam(probe.parameters(), fused=True)

    def step(phase: Phase, size: int) -> None:
        items = default_collate([pairs[(i % len(pairs), size)] for i in range(cfg.batch_size)])
        batch, teacher = pair_to(items, device)
        sandwich_step(probe, sandwich(space, phase.elastic, rng, cfg.sandwich_random), batch, cfg, device, opt, teacher)

    step(phases[0], space.max()["resolution"])  # warm-up: the first step pays for allocations
    seconds = []
    for phase in phases:
        sizes, start = phase_sizes(space, phase), time.perf_counter()
        for j in range(steps):
            step(phase, sizes[j % len(sizes)])
        seconds.append((time.perf_counter() - start) / steps)
    torch.set_rng_state(torch_rng)
    return seconds


def budget_scale(step_seconds: list[float], steps: list[float], seconds: float) -> float:
    """The factor, at most 1, that shortens every phase alike so that ``steps`` steps of
    ``step_seconds`` each take at most ``seconds``."""
    planned = sum(t * n for t, n in zip(step_seconds, steps))
    return min(1.0, max(0.0, seconds / planned))


def steps_in_budget(steps: int, planned: int, done: int, pace: float | None, left: float) -> int:
    """A phase's step count under a time budget with ``left`` seconds to go: ``steps`` until a pace
    (seconds per step) is measured, then as many of its ``planned`` steps as fit at that pace. The
    count may grow back: the first few steps of a phase are slow, and a fit made on them alone left
    7 % of a 12-minute budget unused."""
    if left <= 0:
        return done
    return steps if pace is None else min(planned, done + int(left / pace))


def parameter_digest(net: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal digests mean identical weights."""
    h = hashlib.sha256()
    for p in net.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_supernet(cfg: SupernetConfig, out: str | Path, progress: bool = True) -> list[dict]:
    """Train (or resume) the supernet into ``out``; returns the log rows."""
    out = Path(out)
    device = distributed.local_device(select_device(cfg.device))
    rank, world = distributed.setup(device)
    main = rank == 0
    phases = cfg.parsed_phases()
    space = SearchSpace.load(cfg.space)
    train_ds, val_ds = cfg.datasets()
    k = train_ds.spec.num_keypoints
    torch.manual_seed(cfg.seed)
    net = PoseNet(space.max(), k, spec_mask(train_ds.spec)).to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    distributed.broadcast_module(net)
    train_set = PoseTrainSet(train_ds, (4, 2), Augment() if cfg.augment else None, cfg.seed, cfg.tag_radius)
    pairs = TeacherPairs(train_set, space.max()["resolution"] if cfg.teacher_input == "largest" else None)
    calibration = CalibrationSet(train_ds, cfg.calibration_images, seed=cfg.seed) if val_ds and main else None
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 autocast needs no loss scaling
    position = {"phase": 0, "epoch": 0, "batch": 0, "step": 0, "steps": None}
    spent, log, opt_state, scale = 0.0, [], None, 1.0
    per_epoch = len(ResolutionBatchSampler(len(train_ds), cfg.batch_size, (1,), rank=rank, num_replicas=world))
    if per_epoch == 0:
        raise PoseNASError(f"{cfg.train_ann}: too few images for one batch of {cfg.batch_size} per process")
    ckpt_path = out / CHECKPOINT
    if main:
        remove_stale_temp_files(out)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt["space"] != _plain(space.spec):
            raise PoseNASError(f"{ckpt_path}: trained on another search space than {cfg.space!r}; use a new --out")
        net.load_state_dict(ckpt["supernet"])
        position, spent, log, opt_state = ckpt["position"], ckpt["train_seconds"], ckpt["log"], ckpt["optimizer"]
        scale = ckpt.get("schedule_scale", 1.0)
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if main:
            print(f"resuming {out} in phase {position['phase'] + 1} ({phases[min(position['phase'], len(phases) - 1)].name}),"
                  f" epoch {position['epoch'] + 1}, batch {position['batch']} (step {position['step']})")
    elif cfg.time_budget_min is not None and cfg.fit_budget is not None:
        start = time.time()
        seconds = probe_step_seconds(net, space, phases, pairs, cfg, device)
        spent = time.time() - start
        scale = distributed.gather(budget_scale(seconds, [p.epochs * per_epoch for p in phases],
                                                cfg.fit_budget * cfg.time_budget_min * 60 - spent))[0]  # rank 0's
        if main:
            print(f"time budget {cfg.time_budget_min} min: probed seconds per step "
                  + ", ".join(f"{p.name} {t:.2f}" for p, t in zip(phases, seconds))
                  + f"; every phase runs {scale:.2f} of its epochs")
    seen = {"rank": rank, "first_batch": None, "samples": 0}

    def save(opt: torch.optim.Optimizer | None) -> None:
        distributed.broadcast_module(net)  # every rank's copy equals rank 0's (BN statistics included)
        if not main:
            return
        state = {"supernet": net.state_dict(), "optimizer": opt.state_dict() if opt else None,
                 "scaler": scaler.state_dict(), "position": dict(position), "train_seconds": spent,
                 "schedule_scale": scale, "torch_rng": torch.get_rng_state(), "log": log, "config": asdict(cfg),
                 "space": _plain(space.spec), "spec": train_ds.spec.name, "num_keypoints": k}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        if log:
            frame = pd.DataFrame(log)
            write_text(out / "log.csv", frame.to_csv(index=False))
            plot_supernet_curves(frame, out / "curves.png")

    budget = cfg.time_budget_min * 60 if cfg.time_budget_min is not None else None
    ended = budget is not None and position.get("budget_min", -1) >= cfg.time_budget_min
    if ended and main:
        print(f"{out} already ended at its time budget of {position['budget_min']} min; give a larger "
              f"time_budget_min to go on")
    for pi in range(len(phases) if ended else position["phase"], len(phases)):
        phase = phases[pi]
        fresh = position["epoch"] == 0 and position["batch"] == 0
        if fresh and "width" in phase.elastic and (pi == 0 or "width" not in phases[pi - 1].elastic):
            sort_hidden_channels(net)  # OFA: most important hidden channels first, before widths shrink
        opt = torch.optim.Adam(net.parameters(), lr=phase.lr, fused=True)
        if not fresh and opt_state is not None:
            opt.load_state_dict(opt_state)
        sampler = ResolutionBatchSampler(len(train_ds), cfg.batch_size, phase_sizes(space, phase),
                                         cfg.seed + 1000 * pi, rank=rank, num_replicas=world)
        planned, lr = max(1, round(phase.epochs * scale * per_epoch)), phase.lr
        steps = planned if fresh else (position.get("steps") or planned)  # a shortened phase keeps its length
        warmup, epochs = int(phase.warmup_epochs * scale * per_epoch), math.ceil(planned / per_epoch)
        loader_kw = dict(batch_sampler=sampler, num_workers=cfg.workers, pin_memory=device.type == "cuda")
        if main:
            print(f"phase {pi + 1}/{len(phases)} {phase.name}: elastic {list(phase.elastic) or 'none'}, "
                  f"{steps} steps ({steps / per_epoch:.3g} epochs of {per_epoch}), lr {phase.lr}")
        first = None  # (time, step) at the end of this phase's first step here: its pace leaves out the start-up
        for epoch in range(position["epoch"], epochs):
            if epoch * per_epoch >= steps:
                break
            sampler.set_epoch(epoch, position["batch"])
            train_set.epoch = 1000 * pi + epoch
            net.train()
            sums, count, t0 = [0.0, 0.0], 0, time.time()
            todo = min(per_epoch, steps - epoch * per_epoch) - position["batch"]
            rest = per_epoch - position["batch"]  # the loader may run on: a refit may give the phase steps back
            bar = tqdm(islice(DataLoader(pairs, **loader_kw), rest), total=todo,
                       desc=f"{phase.name} {epoch + 1}/{epochs}", disable=not (progress and main), leave=False)
            for items in bar:
                done = epoch * per_epoch + position["batch"]
                if budget is not None:
                    timed = first is not None and done - first[1] >= PACE_STEPS
                    pace = (time.time() - first[0]) / (done - first[1]) if timed else None
                    steps = position["steps"] = distributed.gather(
                        steps_in_budget(steps, planned, done, pace, budget - spent - (time.time() - t0)))[0]  # rank 0's
                if done >= steps:
                    break
                if seen["first_batch"] is None:
                    seen["first_batch"] = sampler_first(sampler)
                batch, teacher_batch = pair_to(items, device)
                seen["samples"] += len(batch[0])
                lr = warmup_cosine(phase.lr, done, steps, warmup * steps // planned)
                for g in opt.param_groups:
                    g["lr"] = lr
                rng = random.Random(cfg.seed * 1_000_003 + position["step"])
                losses = sandwich_step(net, sandwich(space, phase.elastic, rng, cfg.sandwich_random), batch, cfg,
                                       device, opt, teacher_batch)
                position["batch"] += 1
                position["step"] += 1
                first = first or (time.time(), done + 1)
                sums[0] += losses[0]
                sums[1] += sum(losses[1:]) / len(losses[1:]) if len(losses) > 1 else float("nan")
                count += 1
                bar.set_postfix(largest=f"{losses[0]:.2e}", lr=f"{lr:.1e}")
                if position["step"] % cfg.checkpoint_every == 0:
                    spent += time.time() - t0
                    t0 = time.time()
                    save(opt)
            spent += time.time() - t0
            if main and count:
                log.append({"phase": phase.name, "epoch": epoch + 1, "step": position["step"],
                            "train_seconds": round(spent, 1), "lr": lr,
                            "loss_largest": sums[0] / count, "loss_subnets": sums[1] / count})
            position["epoch"], position["batch"] = epoch + 1, 0
            save(opt)
        position.update(phase=pi + 1, epoch=0, batch=0, steps=None)
        if steps < planned:
            position["budget_min"] = cfg.time_budget_min
            if main:
                print(f"time budget of {cfg.time_budget_min} min: phase {phase.name} shortened to {steps} of its "
                      f"{planned} steps so that its learning rate anneals; later phases do not run")
        if main and val_ds is not None and cfg.eval_archs:
            row = {"phase": phase.name, "epoch": phase.epochs, "step": position["step"], "train_seconds": round(spent, 1)}
            for name in cfg.eval_archs:
                metrics = evaluate_subnet(net, space.resolve(name), calibration, val_ds, cfg.flip_test,
                                          cfg.val_limit, device)
                row[f"AP_{name}"] = metrics["AP"]
                print(f"  {phase.name}: {name} AP {metrics['AP']:.3f} (BN recalibrated, "
                      f"{cfg.val_limit or 'all'} val images)")
            log.append(row)
        save(None)
        if steps < planned:
            break
    ranks = distributed.gather({**seen, "digest": parameter_digest(net)})
    if main:
        write_text(out / "ranks.json", pd.Series(ranks).to_json(orient="values", indent=1))
    distributed.barrier()
    distributed.shutdown()
    return log


def sampler_first(sampler: ResolutionBatchSampler) -> list[int]:
    """Sample indices of the sampler's current first batch (to show that ranks see different data)."""
    return [i for i, _ in next(iter(sampler))]


def _plain(spec: dict) -> dict:
    """The space spec with tuples as lists: what a weights-only checkpoint stores and compares."""
    if isinstance(spec, dict):
        return {k: _plain(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [_plain(v) for v in spec]
    return spec


def plot_supernet_curves(log: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap_columns = [c for c in log.columns if c.startswith("AP_")]
    fig, axes = plt.subplots(1, 2 if ap_columns else 1, figsize=(10 if ap_columns else 5.5, 3.8), squeeze=False)
    a = axes[0][0]
    train = log.dropna(subset=["loss_largest"]) if "loss_largest" in log else log.iloc[0:0]
    a.plot(train["step"], train["loss_largest"], "o-", label="largest subnet")
    a.plot(train["step"], train["loss_subnets"], "s--", label="other subnets (with distillation)")
    a.set_yscale("log"); a.set_xlabel("step"); a.set_ylabel("training loss (labels + distillation)")
    a.grid(alpha=0.3)
    for _, row in train.drop_duplicates("phase", keep="last").iterrows():  # where each phase ends
        a.axvline(row["step"], color="grey", lw=0.5)
        a.annotate(row["phase"], (row["step"], 0.98), xycoords=("data", "axes fraction"), fontsize=7,
                   rotation=90, va="top", ha="right")
    a.legend(fontsize=8, loc="lower right")
    if ap_columns:
        b = axes[0][1]
        for col in ap_columns:
            val = log.dropna(subset=[col])
            b.plot(val["step"], val[col], "o-", label=col[3:])
        b.legend(title="subnet (BN recalibrated)")
        b.set_xlabel("step"); b.set_ylabel("validation COCO AP"); b.set_ylim(0, 1); b.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
