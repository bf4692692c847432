import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from nas.app.cli import main
from nas.errors import PoseNASError
from nas.pose.draw import draw_people
from nas.pose.keypoints import COCO
from nas.subnet.export import load_model
from nas.train.static import TrainConfig, train
from tests.conftest import COCO_MINI

TINY = {"space": "tiny", "arch": "litepose_xs"}  # 96 px


def _cfg(data, **kw):
    return TrainConfig(train_ann=str(data / "annotations.json"), train_images=str(data / "images"),
                       val_ann=str(data / "annotations.json"), val_images=str(data / "images"), batch_size=8,
                       workers=0, val_every=1, val_limit=8, **{**TINY, **kw})


def test_train_writes_checkpoint_log_and_curves_and_resumes(tmp_path, synth_small):
    out = tmp_path / "run"
    train(_cfg(synth_small, epochs=1), out, progress=False)
    first = torch.load(out / "checkpoint.pt", weights_only=True)
    assert first["epoch"] == 1 and first["step"] == 3
    with pytest.raises(PoseNASError, match="holds the checkpoint of another network"):  # not a size mismatch
        train(_cfg(synth_small, epochs=2, arch="min"), out, progress=False)
    metrics = train(_cfg(synth_small, epochs=2), out, progress=False)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 6, "resumed at step 3, not from scratch"
    train(_cfg(synth_small, epochs=2.5), out, progress=False)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["step"] == 8, "half an epoch more: 2 of its 3 batches (rounded)"
    log = pd.read_csv(out / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3] and "AP" in log
    assert set(metrics) >= {"AP", "AP50", "AR"}
    assert (out / "curves.png").stat().st_size > 5000
    assert not list(out.glob(".*.tmp")), "no temporary file left behind"
    net, record = load_model(out / "checkpoint.pt")
    assert record["spec"] == "coco"
    outs = net(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 34, 16, 16), (1, 17, 32, 32)]


@pytest.mark.slow  # 60 training steps on real images
def test_loss_falls_on_real_coco_images(tmp_path):
    ann = COCO_MINI / "annotations" / "person_keypoints_train.json"
    data = json.loads(ann.read_text())
    keep = {i["id"] for i in data["images"][:4]}
    data["images"] = [i for i in data["images"] if i["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(data))
    cfg = TrainConfig(train_ann=str(subset), train_images=str(COCO_MINI / "images"), arch="min", batch_size=4,
                      epochs=60, workers=0, lr=3e-3, warmup_epochs=0, augment=False)
    train(cfg, tmp_path / "run", progress=False)
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert log["heatmap"].iloc[-5:].mean() < 0.6 * log["heatmap"].iloc[:5].mean()


def test_predict_warns_for_a_network_that_learned_from_synthetic_figures_only(tmp_path, synth_small, capsys):
    ann = COCO_MINI / "annotations" / "person_keypoints_train.json"
    data = json.loads(ann.read_text())
    data["images"] = data["images"][:4]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {i["id"] for i in data["images"]}]
    (tmp_path / "real.json").write_text(json.dumps(data))
    real = TrainConfig(train_ann=str(tmp_path / "real.json"), train_images=str(COCO_MINI / "images"), arch="min",
                       batch_size=4, epochs=1, workers=0, augment=False)
    photo = COCO_MINI / "images" / data["images"][0]["file_name"]
    for cfg, warned in ((_cfg(synth_small, epochs=1), True), (real, False)):
        run = tmp_path / ("synthetic" if warned else "real")
        train(cfg, run, progress=False)
        capsys.readouterr()
        assert main(["predict", str(photo), "--checkpoint", str(run / "checkpoint.pt"), "--out",
                     str(tmp_path / "drawn.png")]) == 0
        assert ("learned from synthetic figures only" in capsys.readouterr().err) == warned


def test_predict_draws_skeletons(tmp_path, synth_small, capsys):
    train(_cfg(synth_small, epochs=1), tmp_path / "run", progress=False)
    image = synth_small / "images" / "000001.jpg"
    out = tmp_path / "pred.png"
    code = main(["predict", str(image), "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                 "--out", str(out), "--threshold", "0"])
    assert code == 0 and "people drawn on" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == cv2.imread(str(image)).shape


def test_draw_people_paints_the_skeleton():
    img = np.zeros((100, 100, 3), np.uint8)
    person = np.zeros((1, 17, 3), np.float32)
    person[0, :, :2] = [[50, 10 + 4 * i] for i in range(17)]
    person[0, :, 2] = 1.0
    drawn = draw_people(img, person, COCO)
    assert drawn[40:60, 48:53].sum() > 0 and img.sum() == 0, "drawn on a copy"


def test_checkpoint_that_is_not_one_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PoseNASError, match="not a readable PoseNAS training checkpoint"):
        load_model(bad)
    with pytest.raises(PoseNASError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt")


def test_time_budget_stops_mid_epoch_and_still_evaluates(tmp_path, synth_small):
    metrics = train(_cfg(synth_small, epochs=3, time_budget_min=1e-4), tmp_path / "run", progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 1 and ckpt["epoch"] == 1, "stopped after the step that spent the budget"
    assert "AP" in metrics


def test_a_run_killed_within_an_epoch_resumes_from_its_last_checkpoint_exactly(tmp_path, synth_small, monkeypatch):
    """``checkpoint_every`` saves within an epoch; a resumed run ends with the weights of one that
    never stopped (a long stand-alone epoch outlives the session that started it)."""
    cfg = _cfg(synth_small, epochs=1, checkpoint_every=1)
    whole = tmp_path / "whole"
    train(cfg, whole, progress=False)
    killed = tmp_path / "killed"
    real_step, steps = torch.optim.Adam.step, []

    def step_then_die(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, killed, progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    stopped = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert (stopped["epoch"], stopped["batch"], stopped["step"]) == (0, 2, 2)
    train(cfg, killed, progress=False)
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True) for p in (whole, killed))
    assert (b["epoch"], b["batch"], b["step"]) == (1, 0, 3)
    assert all(torch.equal(a["model"][n], b["model"][n]) for n in a["model"])
    losses = [pd.read_csv(p / "log.csv")["loss"].tolist() for p in (killed, whole)]
    assert losses[0] == pytest.approx(losses[1])
