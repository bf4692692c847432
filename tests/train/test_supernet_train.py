"""Supernet training: sandwich rule, phases, BN recalibration, resume after SIGKILL, two-process DDP."""
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from nas.app.cli import main
from nas.errors import PoseNASError
from nas.pose.dataset import CocoPoseDataset
from nas.subnet.calibration import CalibrationSet, recalibrate
from nas.train.schedule import budget_scale, steps_in_budget
from nas.train.settings import datasets
from nas.train.supernet import PACE_STEPS, SupernetConfig, parse_phases, sandwich, sandwich_step, train_supernet
from search_spaces import SearchSpace
from search_spaces.space import GROUPS
from supernet.importance import sort_hidden_channels
from tests.supernet.test_supernet import trained_like

POSENAS = str(Path(sys.executable).with_name("posenas"))
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
PHASES = [{"name": "largest", "epochs": 1, "lr": 0.004, "elastic": []},
          {"name": "kernel", "epochs": 1, "lr": 0.003, "elastic": ["resolution", "kernel"]},
          {"name": "all", "epochs": 1, "lr": 0.003, "elastic": ["resolution", "kernel", "depth", "width", "token"],
           "warmup_epochs": 1}]


def settings(data: Path, **kw) -> dict:
    return {"train_ann": str(data / "annotations.json"), "train_images": str(data / "images"),
            "val_ann": str(data / "annotations.json"), "val_images": str(data / "images"), "space": "tiny",
            "batch_size": 4, "workers": 0, "checkpoint_every": 2, "calibration_images": 8, "val_limit": 6,
            "sandwich_random": 0, "phases": PHASES, **kw}  # sandwiches of the largest and the smallest: fast


def test_sandwich_is_largest_smallest_and_random_subnets_of_the_open_groups():
    space = SearchSpace.load("cpu")
    archs = sandwich(space, ("kernel",), random.Random(0), 2)
    assert archs[0] == space.max() and archs[1] == space.min(("kernel",)) and len(archs) == 4
    for arch in archs[2:]:
        diff = [d.group for d in space.dimensions if space.encode(arch)[space.dimensions.index(d)] !=
                space.encode(space.max())[space.dimensions.index(d)]]
        assert set(diff) <= {"kernel"}
    assert sandwich(space, (), random.Random(0), 2) == [space.max()]


def test_sandwich_makes_its_random_subnets_single_branch_at_the_given_share_once_depth_is_open():
    space = SearchSpace.load("cpu")

    def singles(groups, share):
        archs = sandwich(space, groups, random.Random(0), 200, share)[2:]
        return sum(a == space.single_branch(a) for a in archs)
    assert singles(GROUPS, 1.0) == 200
    assert 70 < singles(GROUPS, 0.5) < 130
    assert singles(GROUPS, 0.0) < 5  # a uniform draw: one in 729
    assert singles(("kernel", "width"), 1.0) == 0  # depth closed: every branch at its largest
    rng = random.Random(0)  # share 0 draws as before the share existed: older runs repeat
    assert sandwich(space, GROUPS, random.Random(0), 3)[2:] == [space.random(rng, GROUPS) for _ in range(3)]


@pytest.mark.parametrize("update,steps", [("sequential", 4), ("accumulate", 1)])
def test_sandwich_update_steps_per_subnet_or_once(synth_small, update, steps):
    from torch.utils.data import DataLoader

    from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler
    from nas.train.static import spec_mask
    from supernet.network import PoseNet

    cfg = SupernetConfig.from_dict(settings(synth_small, sandwich_update=update))
    data, _ = datasets(cfg)
    space = SearchSpace.load("tiny")
    net = PoseNet.supernet(space, data.spec.num_keypoints, spec_mask(data.spec))
    batch = next(iter(DataLoader(PoseTrainSet(data, (4, 2), None, 0, 1),
                                 batch_sampler=ResolutionBatchSampler(len(data), 4, (space.max()["resolution"],)))))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = sandwich_step(net, sandwich(space, ("width",), random.Random(0), 2), batch, cfg, torch.device("cpu"), opt)
    stem = next(net.parameters())  # shared by every subnet
    assert len(losses) == 4 and int(opt.state[stem]["step"]) == steps
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(PoseNASError, match="sandwich_update 'mean' unknown"):
        SupernetConfig.from_dict(settings(synth_small, sandwich_update="mean"))


def test_the_sandwich_trains_hrnet_and_litepose_networks_on_one_supernet(synth_small):
    """The largest subnet of a space with every block type is HRNet's (bottlenecks, basic blocks,
    its head); the smallest is LitePose's: one sandwich step teaches both, and the distillation
    reads the teacher's maps whatever head made them."""
    from torch.utils.data import DataLoader

    from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler
    from nas.train.static import spec_mask
    from supernet.network import PoseNet

    cfg = SupernetConfig.from_dict(settings(synth_small))
    data, _ = datasets(cfg)
    space = SearchSpace.load(Path(__file__).parents[1] / "supernet" / "hrnet-tiny.yaml")
    net = PoseNet.supernet(space, data.spec.num_keypoints, spec_mask(data.spec))
    batch = next(iter(DataLoader(PoseTrainSet(data, (4, 2), None, 0, 1),
                                 batch_sampler=ResolutionBatchSampler(len(data), 4, (96,)))))
    archs = sandwich(space, ("depth", "head"), random.Random(0), 0)
    assert [a["head"]["style"] for a in archs] == ["higherhrnet", "litepose"]
    before = {n: p.clone() for n, p in net.named_parameters()}
    losses = sandwich_step(net, archs, batch, cfg, torch.device("cpu"), torch.optim.Adam(net.parameters(), lr=1e-3))
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    for part in (".bottlenecks.", ".basic.", ".blocks.", "dense_transition", "adapter", "higher.", "ups."):
        assert any(part in name for name in changed), part
    assert all(map(math.isfinite, losses))


def test_the_sandwich_trains_both_heads_on_one_backbone(synth_small):
    """With the head group open, query-head subnets learn beside AE ones: from the labels, by
    matching (the teacher, the largest subnet, keeps the AE head, a categorical first choice)."""
    from torch.utils.data import DataLoader

    from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler
    from nas.train.static import spec_mask
    from supernet.network import PoseNet

    cfg = SupernetConfig.from_dict(settings(synth_small))
    data, _ = datasets(cfg)
    space = SearchSpace.load("tiny")
    net = PoseNet.supernet(space, data.spec.num_keypoints, spec_mask(data.spec))
    batch = next(iter(DataLoader(PoseTrainSet(data, (4, 2), None, 0, 1),
                                 batch_sampler=ResolutionBatchSampler(len(data), 4, (96,)))))
    archs = sandwich(space, ("head",), random.Random(0), 1)
    archs[-1] = space.with_head(archs[-1], "query")
    assert [a["head"]["type"] for a in archs] == ["ae", "ae", "query"]
    before = {n: p.clone() for n, p in net.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sigmas = torch.as_tensor(data.spec.sigmas)
    losses = sandwich_step(net, archs, batch, cfg, torch.device("cpu"), opt, sigmas=sigmas)
    changed = {n.split(".")[0] for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert {"stem", "final", "query"} <= changed and all(map(math.isfinite, losses))


def test_the_teacher_learns_at_the_largest_input_and_the_students_at_the_batch_size(synth_small):
    from torch.utils.data import DataLoader

    from nas.pose.samples import PoseTrainSet, ResolutionBatchSampler, TeacherPairs
    from nas.train.static import spec_mask
    from supernet.network import PoseNet

    cfg = SupernetConfig.from_dict(settings(synth_small))
    data, _ = datasets(cfg)
    space = SearchSpace.load("tiny")
    net = PoseNet.supernet(space, data.spec.num_keypoints, spec_mask(data.spec))
    pairs = TeacherPairs(PoseTrainSet(data, (4, 2), None, 0, 1), space.max()["resolution"])
    teacher, batch = next(iter(DataLoader(pairs, batch_sampler=ResolutionBatchSampler(len(data), 4, (64,)))))
    sizes = []
    net.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[-1]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    archs = sandwich(space, ("resolution", "width"), random.Random(0), 2)
    losses = sandwich_step(net, archs, batch, cfg, torch.device("cpu"), opt, teacher)
    assert sizes == [96, 64, 64, 64] and all(map(math.isfinite, losses))
    with pytest.raises(PoseNASError, match="teacher_input 'smallest' unknown"):
        SupernetConfig.from_dict(settings(synth_small, teacher_input="smallest"))


@pytest.mark.slow  # three phases with evaluations, then a resume
def test_phases_train_log_evaluate_and_resume(tmp_path, synth_small, capsys):
    out = tmp_path / "run"
    cfg = SupernetConfig.from_dict(settings(synth_small, phases=PHASES[:2]))
    log = train_supernet(cfg, out, progress=False)
    ckpt = torch.load(out / "supernet.pt", weights_only=True)
    assert ckpt["position"] == {"phase": 2, "epoch": 0, "batch": 0, "step": 12, "steps": None,
                                "sums": [0.0, 0.0, 0]}  # the next epoch's running loss sums, not begun
    assert [r["phase"] for r in log if "loss_largest" in r] == ["largest", "kernel"]
    evals = [r for r in log if "AP_max" in r]
    assert len(evals) == 2 and all(0 <= r["AP_min"] <= 1 for r in evals)
    assert (out / "curves.png").stat().st_size > 5000 and len(pd.read_csv(out / "log.csv")) == 4
    # one more phase in the config: the run resumes after the two finished ones
    log = train_supernet(SupernetConfig.from_dict(settings(synth_small)), out, progress=False)
    ckpt = torch.load(out / "supernet.pt", weights_only=True)
    rows = [r for r in log if "loss_largest" in r]
    assert ckpt["position"]["step"] == 18 and [r["phase"] for r in rows] == ["largest", "kernel", "all"]
    # a phase's last step is near the end of its cosine, unless its warm-up spans the whole phase
    assert rows[1]["lr"] < 0.001 and rows[2]["lr"] == pytest.approx(0.003)
    capsys.readouterr()
    train_supernet(SupernetConfig.from_dict(settings(synth_small, eval_archs=[])), out, progress=False)
    assert f"{out}: all 3 phases done (step 18)" in capsys.readouterr().out


def phase_steps(log: list[dict]) -> dict[str, int]:
    """Steps each phase ran, from the per-epoch log rows (their step counts are cumulative)."""
    ends = {r["phase"]: r["step"] for r in log if "loss_largest" in r}
    return dict(zip(ends, [b - a for a, b in zip([0, *ends.values()], ends.values())]))


def test_budget_scale_shortens_phases_alike_and_never_lengthens_them():
    assert budget_scale([2.0, 5.0], [100, 100], 350) == pytest.approx(0.5)
    assert budget_scale([2.0, 5.0], [100, 100], 10_000) == 1.0
    assert budget_scale([2.0], [100], -5) == 0.0  # the probe alone spent the budget: one step per phase


def test_steps_in_budget_fits_a_phase_to_the_time_left_and_never_beyond_its_plan():
    assert steps_in_budget(100, 100, 20, 2.0, 10.0) == 25
    assert steps_in_budget(25, 100, 20, 1.0, 10.0) == 30  # a faster pace than first measured gives steps back
    assert steps_in_budget(100, 100, 20, 0.1, 1e4) == 100
    assert steps_in_budget(60, 100, 20, None, 10.0) == 60  # no pace measured yet: a resumed phase keeps its length
    assert steps_in_budget(100, 100, 20, 2.0, -1.0) == 20  # the budget is spent: the phase ends here


class StepClock:
    """A clock that advances ``seconds`` per sandwich step and stands still otherwise: time budgets
    are then tested by step counts, whatever the machine's speed."""

    def __init__(self, monkeypatch, seconds: float):
        self.now, self.seconds = 0.0, seconds
        import nas.train.supernet as trainer

        step = trainer.sandwich_step

        def timed_step(*args, **kw):
            self.now += self.seconds
            return step(*args, **kw)

        monkeypatch.setattr(trainer, "sandwich_step", timed_step)

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("fit", [pytest.param(0.6, marks=pytest.mark.slow), None])  # fit_budget: slow run
def test_a_time_budget_shortens_every_phase_or_ends_the_first_annealed(tmp_path, synth_small, fit, monkeypatch):
    long = [dict(p, epochs=30) for p in PHASES]  # 180 steps a phase (24 images in batches of 4: 6 steps an epoch)
    cfg = SupernetConfig.from_dict(settings(synth_small, phases=long, eval_archs=[], checkpoint_every=1000,
                                            time_budget_min=0.5 if fit else 0.2, fit_budget=fit))  # 1 s a step
    clock = StepClock(monkeypatch, 1.0)
    log = train_supernet(cfg, tmp_path / "run", progress=False, clock=clock)
    ckpt = torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)
    scale, steps = ckpt["schedule_scale"], phase_steps(log)
    if fit is not None:  # the probe: a warm-up step and 4 a phase (13 s); 0.6 x 30 s - 13 s fits 5 of 540 steps
        assert scale == pytest.approx(5 / 540) and ckpt["position"]["phase"] == 3
        assert steps == {p["name"]: 2 for p in PHASES}  # round(30 epochs x scale x 6 steps)
    else:  # the first phase, shortened from its 180 steps to the 12 that fit in 12 s, is the last
        assert scale == 1 and ckpt["position"]["phase"] == 1 and steps == {"largest": 12}
        assert PACE_STEPS < 12 and ckpt["position"]["budget_min"] == 0.2
        assert log[-1]["lr"] < 0.1 * long[0]["lr"]  # annealed, not cut at full rate
        assert len(train_supernet(cfg, tmp_path / "run", progress=False, clock=clock)) == len(log)  # nothing to do
        assert torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)["position"] == ckpt["position"]
        more = SupernetConfig.from_dict({**asdict(cfg), "time_budget_min": 0.3})  # 6 s more: the next phase runs
        assert phase_steps(train_supernet(more, tmp_path / "run", progress=False, clock=clock)) == {
            "largest": 12, "kernel": 6}
    assert ckpt["train_seconds"] <= cfg.time_budget_min * 60 + 1  # the budget, and at most one step past it


def _run_config(tmp_path, data, **kw) -> Path:
    path = tmp_path / "supernet.yaml"
    path.write_text(yaml.safe_dump(settings(data, **kw)))
    return path


@pytest.mark.slow  # a real process killed and resumed: minutes
def test_killed_training_resumes_from_its_last_checkpoint(tmp_path, synth_small):
    phases = PHASES[:2] + [dict(PHASES[2], epochs=1.5)]  # the last phase ends mid-epoch
    config = _run_config(tmp_path, synth_small, checkpoint_every=1, eval_archs=[], phases=phases)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run([POSENAS, "train-supernet", "--config", str(config), "--out", str(reference)],
                   check=True, capture_output=True, timeout=600)
    done = torch.load(reference / "supernet.pt", weights_only=True)
    proc = subprocess.Popen([POSENAS, "train-supernet", "--config", str(config), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, deadline = killed / "supernet.pt", time.time() + 300
    target = random.Random(os.getpid()).randint(1, done["position"]["step"] - 4)  # somewhere mid-training
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["position"]["step"] >= target:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = torch.load(ckpt, weights_only=True)
    assert before["position"]["step"] < done["position"]["step"], "killed before the end"
    resumed = subprocess.run([POSENAS, "train-supernet", "--config", str(config), "--out", str(killed)],
                             check=True, capture_output=True, text=True, timeout=600)
    assert f"(step {before['position']['step']})" in resumed.stdout
    after = torch.load(ckpt, weights_only=True)
    assert after["position"] == done["position"]
    rows = lambda c: [(r["phase"], r["epoch"], r["step"]) for r in c["log"]]  # noqa: E731
    assert rows(after) == rows(done)
    assert not list(killed.glob(".*.tmp"))
    assert phase_steps(after["log"]) == {"largest": 6, "kernel": 6, "all": 9}


@pytest.mark.slow  # two torchrun processes
def test_two_processes_see_different_data_and_end_with_identical_weights(tmp_path, synth_small):
    config = _run_config(tmp_path, synth_small, phases=PHASES[1:2], eval_archs=[], val_ann=None, val_images=None)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", POSENAS, "train-supernet",
                    "--config", str(config), "--out", str(tmp_path / "ddp")], check=True, capture_output=True,
                   timeout=600, env=env)
    ranks = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert not set(ranks[0]["first_batch"]) & set(ranks[1]["first_batch"])
    assert ranks[0]["samples"] == ranks[1]["samples"] == 12  # 24 images split in two, 4 per batch
    assert ranks[0]["digest"] == ranks[1]["digest"]


def test_recalibration_estimates_exact_batch_statistics(synth_small):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    batches = [torch.randn(4, 3, 8, 8) + i for i in range(3)]
    recalibrate(net, batches)
    with torch.no_grad():
        features = torch.cat([net[0](b) for b in batches])
    assert torch.allclose(net[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not net.training
    calibration = CalibrationSet(CocoPoseDataset(synth_small / "annotations.json", synth_small / "images"), 10, 4)
    first = calibration.batches(96)
    assert first is calibration.batches(96) and [b.shape[0] for b in first] == [4, 4, 2]
    assert first[0].shape[-1] == 96 and calibration.batches(64)[0].shape[-1] == 64


def test_hidden_channel_sorting_preserves_the_function_and_orders_by_importance():
    space = SearchSpace.load("tiny")
    net = trained_like(space)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        before = net.set_active(space.max())(x)
        assert sort_hidden_channels(net) > 0
        after = net(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(before, after))
    block = net.stages[0].fusion_modules[0].branches[0].blocks[0]
    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])
    assert sort_hidden_channels(net) == 0  # already sorted


def test_eval_subnet_cli_and_a_checkpoint_from_another_space(tmp_path, synth_small, capsys):
    out = tmp_path / "run"
    train_supernet(SupernetConfig.from_dict(settings(synth_small, phases=PHASES[:1], eval_archs=[])), out,
                   progress=False)
    capsys.readouterr()
    assert main(["eval-subnet", "--supernet", str(out / "supernet.pt"), "--arch", "min", "--data", str(synth_small),
                 "--calib-images", "8", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics) >= {"AP", "AP50", "AP75", "APM", "APL", "AR"}
    bad = SearchSpace.load("cpu").max()
    (tmp_path / "cpu.json").write_text(json.dumps(bad))
    assert main(["eval-subnet", "--supernet", str(out / "supernet.pt"), "--arch", str(tmp_path / "cpu.json"),
                 "--data", str(synth_small)]) == 2
    assert "cpu.json: resolution = 256 is not allowed; allowed: [64, 96]" in capsys.readouterr().err
    config = _run_config(tmp_path, synth_small, space="cpu")
    assert main(["train-supernet", "--config", str(config), "--out", str(out)]) == 2
    assert "trained on another search space than 'cpu'" in capsys.readouterr().err


def test_a_checkpoint_from_before_the_block_types_resumes_with_a_phase_added(tmp_path, synth_small):
    """A run's stored space written before keys were added (the stem's choices, block types, the
    kept stride, the head style, the preset table) is the same space: its run goes on."""
    out = tmp_path / "run"
    train_supernet(SupernetConfig.from_dict(settings(synth_small, phases=PHASES[:1], eval_archs=[])), out,
                   progress=False)
    state = torch.load(out / "supernet.pt", weights_only=True)
    old = {k: v for k, v in state["space"].items() if k not in ("block", "keep_stride", "presets")}
    state["space"] = {**old, "stem": old["stem"][0], "head": {k: v for k, v in old["head"].items() if k != "style"}}
    torch.save(state, out / "supernet.pt")
    log = train_supernet(SupernetConfig.from_dict(settings(synth_small, phases=PHASES[:2], eval_archs=[])), out,
                         progress=False)
    assert [row["phase"] for row in log][-1] == PHASES[1]["name"]


def test_a_phase_may_set_its_own_single_branch_share(synth_small, tmp_path, monkeypatch):
    cfg = SupernetConfig.from_dict(settings(synth_small, sandwich_single_branch=0.5,
                                            phases=[{"epochs": 1}, {"epochs": 1, "single_branch": 1.0}]))
    assert [p.single_branch for p in parse_phases(cfg)] == [0.5, 1.0]
    shares = []

    def watched(*args):  # the real sandwich, its share noted
        shares.append(args[4])
        return sandwich(*args)
    monkeypatch.setattr("nas.train.supernet.sandwich", watched)
    elastic = ["resolution", "kernel", "depth", "width", "token"]
    train_supernet(SupernetConfig.from_dict(settings(synth_small, sandwich_random=1, eval_archs=[], phases=[
        {"epochs": 0.5, "elastic": elastic}, {"epochs": 0.5, "elastic": elastic, "single_branch": 1.0}])),
        tmp_path / "run", progress=False)
    assert shares[0] == 0.0 and shares[-1] == 1.0 and sorted(set(shares)) == [0.0, 1.0]


def test_a_phase_may_give_the_kernel_transformations_their_own_learning_rate(synth_small, tmp_path):
    def moved(transform_lr: float) -> float:  # the farthest any kernel transformation got from the identity
        phase = {"epochs": 0.5, "lr": 3e-3, "elastic": ["kernel"], "transform_lr": transform_lr}
        out = tmp_path / str(transform_lr)
        train_supernet(SupernetConfig.from_dict(settings(synth_small, eval_archs=[], phases=[phase])), out,
                       progress=False)
        model = torch.load(out / "supernet.pt", weights_only=True)["supernet"]
        return max((t - torch.eye(len(t))).abs().max().item() for n, t in model.items() if ".transform_" in n)

    assert [p.transform_lr for p in parse_phases(SupernetConfig.from_dict(settings(synth_small)))] == \
        [p["lr"] for p in PHASES]  # by default the phase's own
    assert moved(1e-9) < 1e-6 < 1e-3 < moved(3e-2)


def test_supernet_config_names_bad_phases(synth_small):

    for phases, message in (([{"epochs": 1, "elastic": ["colour"]}], r"phases\[0\]\.elastic: unknown group 'colour'"),
                            ([{"epochs": 0}], r"phases\[0\]\.epochs must be a positive number"),
                            ([{"epochs": True}], r"phases\[0\]\.epochs must be a positive number"),
                            ([{"epochs": 1, "warmup_epochs": 2}], r"phases\[0\]\.warmup_epochs must lie in \[0, epochs\]"),
                            ([{"epochs": 1, "single_branch": 1.5}], r"phases\[0\]\.single_branch must lie in \[0, 1\]"),
                            ([{"epochs": 1, "transform_lr": 0}], r"phases\[0\]\.transform_lr must be a positive"),
                            ([], "at least one phase")):
        with pytest.raises(PoseNASError, match=message):
            parse_phases(SupernetConfig.from_dict(settings(synth_small, phases=phases)))
    with pytest.raises(PoseNASError, match=r"fit_budget must lie in \(0, 1\] or be null, got 1.5"):
        SupernetConfig.from_dict(settings(synth_small, fit_budget=1.5))


def test_load_supernet_refuses_other_files(tmp_path):
    from nas.subnet.inherit import TrainedSupernet

    torch.save({"arch": {}, "model": {}}, tmp_path / "static.pt")
    with pytest.raises(PoseNASError, match=r"static\.pt: not a PoseNAS supernet checkpoint \(needs supernet"):
        TrainedSupernet.load(tmp_path / "static.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(PoseNASError, match=r"junk\.pt: not a readable PoseNAS supernet checkpoint"):
        TrainedSupernet.load(tmp_path / "junk.pt")


@pytest.mark.slow  # a training run, then its resume
def test_an_epoch_resumed_after_its_last_step_logs_its_row_whole(tmp_path, synth_small, monkeypatch):
    """A kill between an epoch's last step checkpoint and its end-of-epoch save: the resumed run
    must still log that epoch's row with every step's loss (the sums live in the checkpoint)."""
    from nas.train.checkpoint import RunFolder

    cfg = SupernetConfig.from_dict(settings(synth_small, checkpoint_every=1, eval_archs=[],
                                            phases=[PHASES[0]]))
    snapshots = []
    save = RunFolder.save
    monkeypatch.setattr(RunFolder, "save", lambda self, state, log: (save(self, state, log),
                                                                      snapshots.append(self.checkpoint.read_bytes())))
    done = train_supernet(cfg, tmp_path / "whole", progress=False)
    per_epoch = done[0]["step"]
    last_step = [s for s in snapshots
                 if (p := torch.load(io.BytesIO(s), weights_only=True)["position"])["epoch"] == 0
                 and p["batch"] == per_epoch]
    assert last_step  # the state a kill leaves between the last step's save and the epoch's
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "supernet.pt").write_bytes(last_step[0])
    resumed = train_supernet(cfg, tmp_path / "killed", progress=False)
    assert [(r["epoch"], r["step"], r["loss_largest"]) for r in resumed] == \
        [(r["epoch"], r["step"], r["loss_largest"]) for r in done]


def test_a_run_may_open_a_new_block_type_on_a_trained_supernet(synth_small, tmp_path):
    """The zoo's way onto a space that adds HRNet's basic blocks beside MBConv: every trained
    parameter goes on as it was, the basic blocks and their dense transitions start fresh; a space
    whose largest subnet is another (basic blocks first) is refused."""
    from nas.subnet.inherit import TrainedSupernet

    spec = yaml.safe_load((Path(SearchSpace.load("tiny").source)).read_text())
    one_step = [{"name": "all", "epochs": 0.2, "warmup_epochs": 0}]
    old = tmp_path / "mbconv"
    train_supernet(SupernetConfig.from_dict(settings(synth_small, phases=one_step, eval_archs=[])), old, progress=False)
    (tmp_path / "dense.yaml").write_text(yaml.safe_dump({**spec, "block": [["mbconv", "basic"]] * 4}))
    new = tmp_path / "dense"
    train_supernet(SupernetConfig.from_dict(settings(synth_small, space=str(tmp_path / "dense.yaml"), phases=[
        {**one_step[0], "lr": 1e-12}], init=str(old / "supernet.pt"), eval_archs=[])), new, progress=False)
    before, after = (dict(TrainedSupernet.load(p / "supernet.pt").net.named_parameters()) for p in (old, new))
    assert all(torch.allclose(after[name], p, atol=1e-7) for name, p in before.items()), "trained weights go on"
    assert {name for name in after if name not in before} and all(
        ".basic." in name or ".dense_" in name for name in after if name not in before)
    (tmp_path / "basic-first.yaml").write_text(yaml.safe_dump({**spec, "block": [["basic", "mbconv"]] * 4}))
    with pytest.raises(PoseNASError, match="trained on another search space"):
        train_supernet(SupernetConfig.from_dict(settings(synth_small, space=str(tmp_path / "basic-first.yaml"),
                                                         init=str(old / "supernet.pt"))), tmp_path / "x")


def test_a_run_may_start_from_a_supernet_without_the_query_head_and_add_it(synth_small, tmp_path):
    """The zoo's way onto a space with a new head: the backbone and AE head come from ``init``,
    the query head's heatmaps start as the AE head's once a phase opens the head group (not
    before); a supernet of another backbone is refused."""
    from nas.subnet.inherit import TrainedSupernet

    spec = yaml.safe_load((Path(SearchSpace.load("tiny").source)).read_text())
    for key in ("type", "queries", "decoder_depth", "decoder_width"):
        spec["head"].pop(key)
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(spec))
    one_step = [{"name": "all", "epochs": 0.2, "warmup_epochs": 0}]
    old = tmp_path / "ae"
    train_supernet(SupernetConfig.from_dict(settings(synth_small, space=str(tmp_path / "ae.yaml"), phases=one_step,
                                                     eval_archs=[])), old, progress=False)
    new = tmp_path / "both"
    still = [{**one_step[0], "lr": 1e-12}, {**one_step[0], "lr": 1e-12, "elastic": ["head"]}]  # weights stay put
    train_supernet(SupernetConfig.from_dict(settings(synth_small, init=str(old / "supernet.pt"), phases=still,
                                                     eval_archs=[])), new, progress=False)
    before, after = (TrainedSupernet.load(p / "supernet.pt").net.state_dict() for p in (old, new))
    assert "query.centre.weight" in after and "query.centre.weight" not in before
    assert torch.allclose(after["query.heatmaps.weight"], before["final.weight"][:17], atol=1e-7), \
        "the new head's heatmaps start as the AE head's"
    spec["widths"][0] = [8, 16]
    (tmp_path / "wider.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(PoseNASError, match="trained on another search space"):
        train_supernet(SupernetConfig.from_dict(settings(synth_small, space=str(tmp_path / "wider.yaml"),
                                                         init=str(old / "supernet.pt"))), tmp_path / "x")
