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

import contextlib
import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from nas.config import AT_LEAST_ONE, NON_NEGATIVE, Range, is_kind
from nas.errors import PoseNASError
from nas.io import write_text, writer_lock
from nas.pose.codecs import codec_of
from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler, TeacherPairs
from nas.pose.transforms import Augment
from nas.subnet import zoo
from nas.subnet.inherit import TrainedSupernet, parameter_digest
from nas.train import distributed
from nas.train.checkpoint import RunFolder
from nas.train.curves import plot_curves
from nas.train.device import autocast, batch_to, select_device
from nas.train.schedule import budget_scale, steps_in_budget, warmup_cosine
from nas.train.settings import Settings, datasets
from nas.train.static import spec_mask
from search_spaces import SearchSpace
from search_spaces.space import GROUPS
from supernet.heads import head_named
from supernet.importance import sort_hidden_channels
from supernet.network import PoseNet
from supernet.ops import DynamicConv2d

CHECKPOINT = "supernet.pt"
PHASE_LR = 6e-3  # every default phase, and any phase that names none: the GPU schedule sweep in the README
DEFAULT_PHASES = ({"name": "largest", "epochs": 2, "lr": PHASE_LR, "elastic": []},) + tuple(
    {"name": name, "epochs": 1, "lr": PHASE_LR, "warmup_epochs": 0.1, "elastic": list(GROUPS[:opened])}
    for name, opened in (("resolution+kernel", 2), ("depth", 3), ("width", 4), ("token", 5)))  # one group more each


PHASE_KEYS = ("epochs", "name", "lr", "elastic", "warmup_epochs", "single_branch", "transform_lr")
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
    single_branch: float  # share of the random subnets made single-branch (default: sandwich_single_branch)
    # peak learning rate of the kernel transformations (default: lr); Adam moves each of their entries
    # by about lr a step, and at the weights' 1e-3 they hardly leave the identity in a phase
    transform_lr: float


@dataclass
class SupernetConfig(Settings):
    phases: list = field(default_factory=lambda: [dict(p) for p in DEFAULT_PHASES])
    sandwich_random: int = 2  # random subnets per step besides the largest and the smallest
    # share of those made single-branch (LitePose's); uniform draws almost never are, and train them too little
    sandwich_single_branch: float = 0.0
    sandwich_update: str = "sequential"  # one Adam step per subnet of the sandwich, or one for all ("accumulate")
    teacher_input: str = "largest"  # the largest subnet's input size: the space's largest, or the batch's (OFA)
    warmup_epochs: float = 0.5  # linear warm-up of the first phase (the others set their own, default none)
    checkpoint_every: int = 200  # steps between checkpoints (and at every epoch's end)
    calibration_images: int = 64  # training images for BN recalibration
    eval_archs: list = field(default_factory=lambda: ["max", "min"])  # evaluated at each phase's end
    # with time_budget_min: shorten every phase alike so that the schedule fills this fraction of the budget
    # (the rest absorbs checkpoints and timing noise); null: the phase in which the budget ends is the last
    fit_budget: float | None = None
    init: str | None = None  # a supernet.pt or zoo entry (zoo:NAME) of the same space whose weights start a fresh run

    RANGES = {**Settings.RANGES, "sandwich_random": Range(0, 16),
              "sandwich_single_branch": Range(0, 1), "warmup_epochs": NON_NEGATIVE,
              "checkpoint_every": AT_LEAST_ONE, "calibration_images": AT_LEAST_ONE}

    def __post_init__(self):
        if self.sandwich_update not in SANDWICH_UPDATES:
            raise PoseNASError(f"sandwich_update {self.sandwich_update!r} unknown; use one of {list(SANDWICH_UPDATES)}")
        if self.teacher_input not in TEACHER_INPUTS:
            raise PoseNASError(f"teacher_input {self.teacher_input!r} unknown; use one of {list(TEACHER_INPUTS)}")
        if self.fit_budget is not None and not 0 < self.fit_budget <= 1:
            raise PoseNASError(f"fit_budget must lie in (0, 1] or be null, got {self.fit_budget!r}")
        parse_phases(self)  # the phases are checked where the settings are read



def parse_phases(cfg: SupernetConfig) -> list[Phase]:
    """The config's phases, each checked, with the defaults filled in."""
    phases = []
    for i, p in enumerate(cfg.phases):
        where = f"phases[{i}]"
        if not isinstance(p, dict) or set(p) - set(PHASE_KEYS) or "epochs" not in p:
            raise PoseNASError(f"{where} must be a mapping with epochs, and optionally "
                               f"{', '.join(PHASE_KEYS[1:])}; got {p!r}")
        elastic = tuple(p.get("elastic", ()))
        bad = [g for g in elastic if g not in GROUPS]
        if bad:
            raise PoseNASError(f"{where}.elastic: unknown group {bad[0]!r}; groups: {list(GROUPS)}")
        if not is_kind(p["epochs"], (int, float)) or not 0 < p["epochs"] < math.inf:
            raise PoseNASError(f"{where}.epochs must be a positive number, got {p['epochs']!r}")
        lr = p.get("lr", PHASE_LR)
        transform_lr = p.get("transform_lr", lr)
        for key, value in (("lr", lr), ("transform_lr", transform_lr)):
            if not is_kind(value, (int, float)) or not 0 < value < math.inf:
                raise PoseNASError(f"{where}.{key} must be a positive number, got {value!r}")
        warmup = p.get("warmup_epochs", cfg.warmup_epochs if i == 0 else 0.0)
        if not is_kind(warmup, (int, float)) or not 0 <= warmup <= p["epochs"]:
            raise PoseNASError(f"{where}.warmup_epochs must lie in [0, epochs], got {warmup!r}")
        single = p.get("single_branch", cfg.sandwich_single_branch)
        if not is_kind(single, (int, float)) or not 0 <= single <= 1:
            raise PoseNASError(f"{where}.single_branch must lie in [0, 1], got {single!r}")
        phases.append(Phase(str(p.get("name", f"phase{i + 1}")), float(p["epochs"]), float(lr),
                            elastic, float(warmup), float(single), float(transform_lr)))
    if not phases:
        raise PoseNASError("phases: give at least one phase")
    return phases


def phase_param_groups(net: torch.nn.Module, phase: Phase) -> list[dict]:
    """Adam's parameter groups for ``phase``, each with its peak learning rate: the kernel
    transformations apart only where the phase gives them their own (so older checkpoints resume)."""
    if phase.transform_lr == phase.lr:
        return [{"params": list(net.parameters()), "peak": phase.lr, "lr": phase.lr}]
    transforms = [t for m in net.modules() if isinstance(m, DynamicConv2d) for t in m.transforms()]
    apart = {id(t) for t in transforms}
    rest = [p for p in net.parameters() if id(p) not in apart]
    return [{"params": rest, "peak": phase.lr, "lr": phase.lr},
            {"params": transforms, "peak": phase.transform_lr, "lr": phase.transform_lr}]


def sandwich(space: SearchSpace, groups: tuple[str, ...], rng: random.Random, n_random: int,
             single_branch: float = 0.0) -> list[dict]:
    """Largest first (the teacher), then the smallest and ``n_random`` random subnets of the open
    groups, each made single-branch with probability ``single_branch`` once depth is open; with
    nothing open, the largest alone."""
    if not groups:
        return [space.max()]

    def draw() -> dict:
        arch = space.random(rng, groups)
        shrunk = single_branch and "depth" in groups and rng.random() < single_branch  # no draw at 0: runs repeat
        return space.single_branch(arch) if shrunk else arch
    return [space.max(), space.min(groups)] + [draw() for _ in range(n_random)]


def sandwich_step(net: PoseNet, archs: list[dict], batch, cfg: SupernetConfig, device: torch.device,
                  opt: torch.optim.Optimizer, teacher_batch=None, sigmas: torch.Tensor | None = None) -> list[float]:
    """Forward and backward every subnet of the sandwich on one batch; returns their losses and
    leaves no gradients behind. The teacher (the first subnet) takes ``teacher_batch`` where given,
    the same scenes at another size; its heatmaps are resized to the students' for distillation.

    ``sequential`` steps the optimizer after each subnet (the teacher's heatmaps are taken before
    its own step), so a sandwich of four makes four updates of the shared weights; on the short
    budgets of a CPU this ranks subnets far better than ``accumulate``, one step for the whole
    sandwich (BigNAS, OFA): Kendall's tau 0.93 against 0.57 in the supernet benchmark.

    A query-head subnet learns from the labels alone (``sigmas``: the dataset's OKS sigmas); the
    teacher, the largest subnet, has the AE head (a categorical dimension's first choice)."""
    k = net.num_keypoints
    sequential = cfg.sandwich_update == "sequential"
    teacher, losses = None, []
    for i, arch in enumerate(archs):
        images, heats, masks, joints, people = teacher_batch if i == 0 and teacher_batch is not None else batch
        net.set_active({**arch, "resolution": images.shape[-1]})
        codec = codec_of(arch)
        loss, _, outputs = codec.loss(net, (images, heats, masks, joints, people), cfg, sigmas,
                                      lambda: autocast(device))
        if i == 0 and codec.distils:
            teacher = [h.detach() if h.shape[-2:] == t.shape[-2:] else  # pixel centres scale with the size
                       F.interpolate(h.detach(), size=t.shape[-2:], mode="bilinear", align_corners=False)
                       for h, t in zip(codec.teacher_maps(outputs, k), batch[1])]
        elif teacher is not None and codec.distils:
            loss = loss + cfg.distill_weight * codec.distillation(outputs, teacher, masks, k)
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
                       cfg: SupernetConfig, device: torch.device, steps: int = 4,
                       clock: Callable[[], float] = time.perf_counter, sigmas: torch.Tensor | None = None
                       ) -> list[float]:
    """Seconds per sandwich step of each phase (building the batch included), timed on a throwaway
    copy of the supernet over ``steps`` steps that cycle through the phase's input sizes."""
    probe, rng, torch_rng = copy.deepcopy(net), random.Random(cfg.seed), torch.get_rng_state()
    opt = torch.optim.Adam(probe.parameters(), fused=True)

    def step(phase: Phase, size: int) -> None:
        items = default_collate([pairs[(i % len(pairs), size)] for i in range(cfg.batch_size)])
        batch, teacher = pair_to(items, device)
        archs = sandwich(space, phase.elastic, rng, cfg.sandwich_random, phase.single_branch)
        sandwich_step(probe, archs, batch, cfg, device, opt, teacher, sigmas)

    step(phases[0], space.max()["resolution"])  # warm-up: the first step pays for allocations
    seconds = []
    for phase in phases:
        sizes, start = phase_sizes(space, phase), clock()
        for j in range(steps):
            step(phase, sizes[j % len(sizes)])
        seconds.append((clock() - start) / steps)
    torch.set_rng_state(torch_rng)
    return seconds


def plot_training(log: pd.DataFrame, path: Path) -> None:
    ap = {c: c[3:] for c in log.columns if c.startswith("AP_")}
    losses = {"loss_largest": "largest subnet", "loss_subnets": "other subnets (with distillation)"}
    plot_curves(log, path, "step", losses, ap, "subnet (BN recalibrated)")


class SupernetRun:
    """One supernet training run: set up once, then phase by phase, epoch by epoch, resumable at
    any checkpoint. Every rank of a distributed run holds one; rank 0 writes the folder."""

    def __init__(self, cfg: SupernetConfig, out: str | Path, progress: bool, clock: Callable[[], float]):
        self.cfg, self.out, self.progress, self.clock = cfg, Path(out), progress, clock
        self.device = distributed.local_device(select_device(cfg.device))
        self.rank, self.world = distributed.setup(self.device)
        self.main = self.rank == 0
        self.phases = parse_phases(cfg)
        self.space = SearchSpace.load(cfg.space)
        self.train_ds, self.val_ds = datasets(cfg)
        self.sigmas = torch.as_tensor(self.train_ds.spec.sigmas, dtype=torch.float32, device=self.device)
        torch.manual_seed(cfg.seed)
        net = PoseNet.supernet(self.space, self.train_ds.spec.num_keypoints, spec_mask(self.train_ds.spec))
        self.net = net.to(self.device)
        if self.device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)
        distributed.broadcast_module(self.net)
        self.train_set = PoseTrainSet(self.train_ds, (4, 2), Augment() if cfg.augment else None, cfg.seed,
                                      cfg.tag_radius)
        self.pairs = TeacherPairs(self.train_set,
                                  self.space.max()["resolution"] if cfg.teacher_input == "largest" else None)
        self.evaluator = TrainedSupernet(self.net, self.space, self.train_ds.spec.name, self.train_ds,
                                         cfg.calibration_images, cfg.seed)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 autocast needs no loss scaling
        self.position = {"phase": 0, "epoch": 0, "batch": 0, "step": 0, "steps": None}
        self.spent, self.log, self.opt_state, self.scale = 0.0, [], None, 1.0
        self.continues = None  # the zoo entry this run started from (zoo.earlier_stage)
        self.per_epoch = len(ResolutionBatchSampler(len(self.train_ds), cfg.batch_size, (1,), rank=self.rank,
                                                    num_replicas=self.world))
        if self.per_epoch == 0:
            raise PoseNASError(f"{cfg.train_ann}: too few images for one batch of {cfg.batch_size} per process")
        self.folder = RunFolder(out, CHECKPOINT, plot_training, writer=self.main)
        self.seen = {"rank": self.rank, "first_batch": None, "samples": 0}
        self.budget = cfg.time_budget_min * 60 if cfg.time_budget_min is not None else None

    def resume(self) -> None:
        """Go on from the last checkpoint; a fresh run starts from ``init``'s weights when given,
        and under ``fit_budget`` shortens every phase alike from step times probed first."""
        ckpt = self.folder.resume(self.device)
        if ckpt is not None:
            if SearchSpace(ckpt["space"]).networks() != self.space.networks():  # keys added since: their old values
                raise PoseNASError(f"{self.folder.checkpoint}: trained on another search space than "
                                   f"{self.cfg.space!r}; use a new --out")
            self.net.load_state_dict(ckpt["supernet"])
            self.position, self.spent, self.log = ckpt["position"], ckpt["train_seconds"], ckpt["log"]
            self.opt_state, self.scale = ckpt["optimizer"], ckpt.get("schedule_scale", 1.0)
            self.scaler.load_state_dict(ckpt["scaler"])
            self.continues = ckpt.get("continues")
            if self.main and self.position["phase"] >= len(self.phases):
                print(f"{self.out}: all {len(self.phases)} phases done (step {self.position['step']})")
            elif self.main:
                phase = self.phases[self.position["phase"]]
                print(f"resuming {self.out} in phase {self.position['phase'] + 1} ({phase.name}), epoch "
                      f"{self.position['epoch'] + 1}, batch {self.position['batch']} (step {self.position['step']})")
            return
        if self.cfg.init:
            self.start_from(self.cfg.init)
        if self.budget is not None and self.cfg.fit_budget is not None:
            start = self.clock()
            seconds = probe_step_seconds(self.net, self.space, self.phases, self.pairs, self.cfg, self.device,
                                         clock=self.clock, sigmas=self.sigmas)
            self.spent = self.clock() - start
            planned = [p.epochs * self.per_epoch for p in self.phases]
            self.scale = distributed.gather(budget_scale(seconds, planned, self.cfg.fit_budget * self.budget
                                                         - self.spent))[0]  # rank 0's
            if self.main:
                print(f"time budget {self.cfg.time_budget_min} min: probed seconds per step "
                      + ", ".join(f"{p.name} {t:.2f}" for p, t in zip(self.phases, seconds))
                      + f"; every phase runs {self.scale:.2f} of its epochs")

    def start_from(self, source: str) -> None:
        """Go on training another run's supernet (a zoo entry, say): its weights, a fresh schedule."""
        trained = TrainedSupernet.load(source, device=self.device)
        if not self.space.grows(trained.space):
            raise PoseNASError(f"init {source}: trained on another search space than {self.cfg.space!r} (a space "
                               "may only add choices to it, at the same largest subnet)")
        missing, unexpected = self.net.load_state_dict(trained.net.state_dict(), strict=False)
        if unexpected:
            raise PoseNASError(f"init {source}: its weights do not fit {self.cfg.space!r} "
                               f"(unexpected {unexpected[:2]})")
        if zoo.is_card(trained.record):
            self.continues = zoo.earlier_stage(source, trained.record)
        if self.main:
            fresh = f"; {len(missing)} new tensors start fresh" if missing else ""
            print(f"starting from the weights of {source}{fresh}")

    def save(self, opt: torch.optim.Optimizer | None) -> None:
        distributed.broadcast_module(self.net)  # every rank's copy equals rank 0's (BN statistics included)
        if self.main:
            k = self.train_ds.spec.num_keypoints
            self.folder.save({"supernet": self.net.state_dict(), "optimizer": opt.state_dict() if opt else None,
                              "scaler": self.scaler.state_dict(), "position": dict(self.position),
                              "train_seconds": self.spent, "schedule_scale": self.scale, "config": asdict(self.cfg),
                              "synthetic": self.train_ds.synthetic,
                              "space": _plain(self.space.spec), "spec": self.train_ds.spec.name, "num_keypoints": k,
                              "continues": self.continues},
                             self.log)

    def run(self) -> list[dict]:
        """Every phase not yet done; returns the log rows."""
        ended = self.budget is not None and self.position.get("budget_min", -1) >= self.cfg.time_budget_min
        if ended and self.main:
            print(f"{self.out} already ended at its time budget of {self.position['budget_min']} min; give a larger "
                  f"time_budget_min to go on")
        for pi in range(len(self.phases) if ended else self.position["phase"], len(self.phases)):
            if not self.run_phase(pi):
                break
        ranks = distributed.gather({**self.seen, "digest": parameter_digest(self.net)[:16]})
        if self.main:
            write_text(self.out / "ranks.json", pd.Series(ranks).to_json(orient="values", indent=1))
        distributed.barrier()
        distributed.shutdown()
        return self.log

    def run_phase(self, pi: int) -> bool:
        """Train phase ``pi`` to its end, evaluate and save; False when the time budget ended it."""
        phase, cfg, position = self.phases[pi], self.cfg, self.position
        fresh = position["epoch"] == 0 and position["batch"] == 0

        def opens(group: str) -> bool:
            return fresh and group in phase.elastic and (pi == 0 or group not in self.phases[pi - 1].elastic)

        if opens("width"):
            sort_hidden_channels(self.net)  # OFA: most important hidden channels first, before widths shrink
        if opens("head"):
            for head in self.space.choices("head.type"):
                head_named(head).when_opened(self.net)
        opt = torch.optim.Adam(phase_param_groups(self.net, phase), fused=True)
        if not fresh and self.opt_state is not None:
            opt.load_state_dict(self.opt_state)
        sampler = ResolutionBatchSampler(len(self.train_ds), cfg.batch_size, phase_sizes(self.space, phase),
                                         cfg.seed + 1000 * pi, rank=self.rank, num_replicas=self.world)
        planned = max(1, round(phase.epochs * self.scale * self.per_epoch))
        self.steps = planned if fresh else (position.get("steps") or planned)  # a shortened phase keeps its length
        epochs = math.ceil(planned / self.per_epoch)
        if self.main:
            print(f"phase {pi + 1}/{len(self.phases)} {phase.name}: elastic {list(phase.elastic) or 'none'}, "
                  f"{self.steps} steps ({self.steps / self.per_epoch:.3g} epochs of {self.per_epoch}), lr {phase.lr}")
        self.first = None  # (time, step) at the end of this phase's first step here: its pace leaves out the start-up
        for epoch in range(position["epoch"], epochs):
            if epoch * self.per_epoch >= self.steps:
                break
            self.run_epoch(pi, epoch, epochs, planned, sampler, opt)
        position.update(phase=pi + 1, epoch=0, batch=0, steps=None)
        shortened = self.steps < planned
        if shortened:
            position["budget_min"] = cfg.time_budget_min
            if self.main:
                print(f"time budget of {cfg.time_budget_min} min: phase {phase.name} shortened to {self.steps} of its "
                      f"{planned} steps so that its learning rate anneals; later phases do not run")
        if self.main and self.val_ds is not None and cfg.eval_archs:
            self.evaluate(phase)
        self.save(None)
        return not shortened

    def run_epoch(self, pi: int, epoch: int, epochs: int, planned: int, sampler: ResolutionBatchSampler,
                  opt: torch.optim.Optimizer) -> None:
        """One epoch of phase ``pi`` from where its last checkpoint stopped, up to the phase's
        (budget-fitted) step count; checkpoints every ``checkpoint_every`` steps and at its end."""
        phase, cfg, position = self.phases[pi], self.cfg, self.position
        warmup = int(phase.warmup_epochs * self.scale * self.per_epoch)
        loader_kw = dict(batch_sampler=sampler, num_workers=cfg.workers, pin_memory=self.device.type == "cuda")
        sampler.set_epoch(epoch, position["batch"])
        self.train_set.epoch = 1000 * pi + epoch
        self.net.train()
        # the epoch's running loss sums live in the checkpoint, so an epoch resumed anywhere (even after
        # its last step, before its row was saved) logs its row whole
        sums, t0, lr = position.setdefault("sums", [0.0, 0.0, 0]), self.clock(), phase.lr
        todo = min(self.per_epoch, self.steps - epoch * self.per_epoch) - position["batch"]
        rest = self.per_epoch - position["batch"]  # the loader may run on: a refit may give the phase steps back
        bar = tqdm(islice(DataLoader(self.pairs, **loader_kw), rest), total=todo,
                   desc=f"{phase.name} {epoch + 1}/{epochs}", disable=not (self.progress and self.main), leave=False)
        for items in bar:
            done = epoch * self.per_epoch + position["batch"]
            if self.budget is not None:
                timed = self.first is not None and done - self.first[1] >= PACE_STEPS
                pace = (self.clock() - self.first[0]) / (done - self.first[1]) if timed else None
                left = self.budget - self.spent - (self.clock() - t0)
                self.steps = position["steps"] = distributed.gather(
                    steps_in_budget(self.steps, planned, done, pace, left))[0]  # rank 0's
            if done >= self.steps:
                break
            if self.seen["first_batch"] is None:
                self.seen["first_batch"] = sampler_first(sampler)
            batch, teacher_batch = pair_to(items, self.device)
            self.seen["samples"] += len(batch[0])
            lr = warmup_cosine(phase.lr, done, self.steps, warmup * self.steps // planned)
            for g in opt.param_groups:
                g["lr"] = lr * g["peak"] / phase.lr
            rng = random.Random(cfg.seed * 1_000_003 + position["step"])
            archs = sandwich(self.space, phase.elastic, rng, cfg.sandwich_random, phase.single_branch)
            losses = sandwich_step(self.net, archs, batch, cfg, self.device, opt, teacher_batch, self.sigmas)
            position["batch"] += 1
            position["step"] += 1
            self.first = self.first or (self.clock(), done + 1)
            sums[0] += losses[0]
            sums[1] += sum(losses[1:]) / len(losses[1:]) if len(losses) > 1 else float("nan")
            sums[2] += 1
            bar.set_postfix(largest=f"{losses[0]:.2e}", lr=f"{lr:.1e}")
            if position["step"] % cfg.checkpoint_every == 0:
                self.spent += self.clock() - t0
                t0 = self.clock()
                self.save(opt)
        self.spent += self.clock() - t0
        if self.main and sums[2]:
            self.log.append({"phase": phase.name, "epoch": epoch + 1, "step": position["step"],
                             "train_seconds": round(self.spent, 1), "lr": lr,
                             "loss_largest": sums[0] / sums[2], "loss_subnets": sums[1] / sums[2]})
        position["epoch"], position["batch"], position["sums"] = epoch + 1, 0, [0.0, 0.0, 0]
        self.save(opt)

    def evaluate(self, phase: Phase) -> None:
        """The ``eval_archs`` subnets' AP (BN recalibrated) at a phase's end, as a log row."""
        cfg = self.cfg
        row = {"phase": phase.name, "epoch": phase.epochs, "step": self.position["step"],
               "train_seconds": round(self.spent, 1)}
        for name in cfg.eval_archs:
            metrics = self.evaluator.evaluate(self.space.resolve(name), self.val_ds, cfg.flip_test, cfg.val_limit,
                                              self.device)
            row[f"AP_{name}"] = metrics["AP"]
            print(f"  {phase.name}: {name} AP {metrics['AP']:.3f} (BN recalibrated, "
                  f"{cfg.val_limit or 'all'} val images)")
        self.log.append(row)


def train_supernet(cfg: SupernetConfig, out: str | Path, progress: bool = True,
                   clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Train (or resume) the supernet into ``out``; returns the log rows. ``clock`` (seconds)
    measures the time budget."""
    run = SupernetRun(cfg, out, progress, clock)
    with writer_lock(out) if run.main else contextlib.nullcontext():  # rank 0 alone writes the folder
        run.resume()
        return run.run()


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
