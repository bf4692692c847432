"""Finetuning from inherited weights, export folders, and loading them back without the supernet."""
import json

import cv2
import numpy as np
import pytest
import torch

import nas
from nas.app.cli import main
from nas.errors import PoseNASError
from nas.pose.completion import synthetic_skeletons, train_completion
from nas.pose.decode import DecodeConfig
from nas.pose.inference import decode_batch, people_from_candidates, prepare
from nas.pose.keypoints import COCO
from nas.search.results import pareto_winners
from nas.subnet.export import load_refiner, load_subnet
from nas.subnet.inherit import TrainedSupernet
from nas.subnet.onnx import INPUT, session
from search_spaces import write_arch
from supernet.network import extract


def _finetune(tmp_path, tiny_supernet, synth_small, *extra):
    out = tmp_path / "ft"
    args = ["finetune", "--supernet", str(tiny_supernet), "--arch", "min", "--val-data", str(synth_small),
            "--epochs", "1", "--batch-size", "8", "--workers", "0", "--repeats", "3", "--warmup", "1",
            "--cache", str(tmp_path / "lat.sqlite"), "--out", str(out), *extra]
    assert main(args) == 0
    (folder,) = out.iterdir()
    return folder


@pytest.mark.slow  # three finetuning runs
def test_finetune_starts_from_inherited_weights_and_learns_from_the_teacher(tmp_path, tiny_supernet, synth_small):
    frozen = _finetune(tmp_path / "a", tiny_supernet, synth_small, "--lr", "0")
    trained = TrainedSupernet.load(tiny_supernet)
    supernet, space = trained.net, trained.space
    inherited = extract(supernet, space.min()).state_dict()
    trained = torch.load(frozen / "checkpoint.pt", weights_only=True)["model"]
    params = [n for n, _ in extract(supernet, space.min()).named_parameters()]
    assert all(torch.equal(trained[n], inherited[n]) for n in params), "lr 0 must leave the inherited weights"
    record = json.loads((frozen / "finetune.json").read_text())
    assert set(record["before"]) >= {"AP", "AP50", "AR"} and set(record["after"]) >= {"AP", "AP50", "AR"}
    assert record["arch"] == space.min()
    # the teacher's heatmaps are part of the loss: without them the same run sees other losses
    with_teacher = _finetune(tmp_path / "b", tiny_supernet, synth_small)
    without = _finetune(tmp_path / "c", tiny_supernet, synth_small, "--config", str(_yaml(tmp_path)))
    loss = [json.loads(json.dumps(torch.load(f / "checkpoint.pt", weights_only=True)["log"]))[0]["loss"]
            for f in (with_teacher, without)]
    assert loss[0] > loss[1], "distillation adds a loss term"


def _yaml(tmp_path):
    path = tmp_path / "no-teacher.yaml"
    path.write_text("distill_weight: 0.0\n")
    return path


def test_export_round_trip_onnx_eval_and_predict(tmp_path, tiny_supernet, synth_small, capsys):
    out = tmp_path / "export"
    assert main(["export", "--supernet", str(tiny_supernet), "--arch", "max", "--out", str(out), "--data",
                 str(synth_small), "--repeats", "5", "--warmup", "1", "--no-cache", "--latency-of", "total"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["onnx"]["max_abs_difference"] <= 1e-4 and card["metrics"]["AP"] is not None
    assert card["onnx"]["outputs"] == ["heatmaps", "tags", "candidates", "candidate_tags"]
    assert card["latency"]["median_ms"] > 0 and card["latency"]["device"]["cores"] >= 1
    assert card["latency"]["runtime"]["threads"] == 1 and card["macs"] > 0
    assert card["latency"]["network_ms"] > 0 and card["latency"]["grouping_ms"] > 0 and card["latency"]["slowdown"] > 0
    net, loaded_card = nas.load_subnet(out)
    assert loaded_card == card
    space = TrainedSupernet.load(tiny_supernet).space
    # model.onnx holds the network and the in-graph decoding; its people equal the torch decoder's
    image = cv2.imread(str(next((synth_small / "images").iterdir())))
    x, matrix = prepare(image, 96)
    ort = session((out / "model.onnx").read_bytes()).run(None, {INPUT: x[None]})
    every_peak = DecodeConfig(detection_threshold=0.0)  # a barely trained net: take every peak as a joint
    with torch.no_grad():
        (expected, expected_scores), = decode_batch(net(torch.from_numpy(x[None])), [matrix], 96, COCO, every_peak)
    people, scores = people_from_candidates(ort, matrix, 96, COCO, every_peak)
    assert len(people) > 0 and people.shape == expected.shape and np.abs(people - expected).max() <= 1e-3
    assert np.abs(scores - expected_scores).max() <= 1e-4
    assert json.loads((out / "arch.json").read_text()) == space.max()
    capsys.readouterr()
    assert main(["eval", "--ann", str(synth_small / "annotations.json"), "--images", str(synth_small / "images"),
                 "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["AP"] == pytest.approx(card["metrics"]["AP"], abs=1e-6)
    image = next((synth_small / "images").iterdir())
    assert main(["predict", str(image), "--checkpoint", str(out), "--out", str(tmp_path / "drawn.png")]) == 0
    assert cv2.imread(str(tmp_path / "drawn.png")).shape[:2] == cv2.imread(str(image)).shape[:2]


def test_a_query_subnet_exports_people_and_carries_its_skeleton_completer(tmp_path, tiny_supernet, synth_small):
    completer = tmp_path / "completer"
    train_completion(*synthetic_skeletons(50, seed=0), COCO, steps=2, batch=8).save(completer)
    space = TrainedSupernet.load(tiny_supernet).space
    write_arch(tmp_path / "query.json", space.with_head(space.max(), "query"))
    out = tmp_path / "export"
    assert main(["export", "--supernet", str(tiny_supernet), "--arch", str(tmp_path / "query.json"), "--out",
                 str(out), "--refine", str(completer), "--repeats", "5", "--warmup", "1", "--no-cache"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["onnx"]["outputs"] == ["people"] and card["onnx"]["max_abs_difference"] <= 1e-4
    assert card["latency"]["grouping_ms"] == 0 and card["refine"]["spec"] == "coco"
    net, _ = load_subnet(out)
    refine = load_refiner(out)
    x, matrix = prepare(cv2.imread(str(next((synth_small / "images").iterdir()))), 96)
    ort = session((out / "model.onnx").read_bytes()).run(None, {INPUT: x[None]})
    every = DecodeConfig(person_threshold=0.0)  # an untrained head: every person
    with torch.no_grad():
        outputs = net(torch.from_numpy(x[None]))
    (expected, expected_scores), = decode_batch(outputs, [matrix], 96, COCO, every, refine=refine)
    people, scores = people_from_candidates(ort, matrix, 96, COCO, every, refine)
    assert len(people) == space.max()["head"]["queries"] == len(expected)
    assert np.abs(people - expected).max() <= 1e-2 and np.abs(scores - expected_scores).max() <= 1e-4
    # joints scoring under missing_below move where the completer puts them; the others stay
    with torch.no_grad():
        for layer in net.query.layers:
            layer.joint_logit.weight.normal_(0, 1.0)
            layer.offset.weight.normal_(0, 0.2)
        outputs = net(torch.from_numpy(x[None]))
    (plain, _), = decode_batch(outputs, [matrix], 96, COCO, every)
    half = DecodeConfig(person_threshold=0.0, missing_below=float(np.median(plain[..., 2])))
    (refined, _), = decode_batch(outputs, [matrix], 96, COCO, half, refine=refine)
    kept = plain[..., 2] >= half.missing_below
    assert kept.any() and (~kept).any()
    assert np.array_equal(refined[kept], plain[kept]) and not np.allclose(refined[~kept], plain[~kept])


def test_tampered_or_incomplete_exports_are_refused(tmp_path, tiny_supernet, capsys):
    out = tmp_path / "export"
    assert main(["export", "--supernet", str(tiny_supernet), "--arch", "min", "--out", str(out), "--no-cache",
                 "--repeats", "3", "--warmup", "1"]) == 0
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(PoseNASError, match="SHA-256 differs"):
        load_subnet(out)
    capsys.readouterr()
    assert main(["eval", "--ann", "x.json", "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.safetensors: SHA-256 differs" in err and len(err.splitlines()) == 1
    (out / "card.json").unlink()
    with pytest.raises(PoseNASError, match="not an exported subnet"):
        load_subnet(out)


def test_pareto_winners_best_first_and_errors(tmp_path):
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps({"pareto": [{"AP": 0.1, "arch": {"a": 1}}, {"AP": 0.3, "arch": {"a": 2}}]}))
    assert pareto_winners(path, 1) == [{"a": 2}] and len(pareto_winners(path, 5)) == 2
    path.write_text(json.dumps({"pareto": []}))
    with pytest.raises(PoseNASError, match="Pareto set is empty"):
        pareto_winners(path, 1)
    path.write_text("[]")
    with pytest.raises(PoseNASError, match="not a pareto.json"):
        pareto_winners(path, 1)
