"""Finetuning from inherited weights, export folders, and loading them back without the supernet."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import nas
from nas.app.cli import main
from nas.errors import PoseNASError
from nas.io import recover_folder, writer_lock
from nas.pose.codecs.ae import CODEC as AE
from nas.pose.codecs.query import CODEC as QUERY
from nas.pose.completion import synthetic_skeletons, train_completion
from nas.pose.dataset import CocoPoseDataset, set_files
from nas.pose.decode import DecodeConfig
from nas.pose.inference import decode_batch, people_from_deployed, prepare
from nas.pose.keypoints import COCO
from nas.pose.synth import generate, synthetic_set
from nas.search.results import pareto_winners
from nas.subnet.export import load_refiner, load_subnet
from nas.subnet.inherit import TrainedSupernet
from nas.subnet.onnx import INPUT, session
from search_spaces import SearchSpace, arch_hash, write_arch
from supernet.network import extract
from tests.conftest import COCO_MINI

POSENAS = str(Path(sys.executable).with_name("posenas"))


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
    frozen = _finetune(tmp_path / "a", tiny_supernet, synth_small, "--lr", "1e-30")  # a step too small to move
    trained = TrainedSupernet.load(tiny_supernet)
    supernet, space = trained.net, trained.space
    inherited = extract(supernet, space.min()).state_dict()
    trained = torch.load(frozen / "checkpoint.pt", weights_only=True)["model"]
    params = [n for n, _ in extract(supernet, space.min()).named_parameters()]
    assert all(torch.allclose(trained[n], inherited[n], rtol=0, atol=1e-20) for n in params), \
        "finetuning starts from the inherited weights"
    record = json.loads((frozen / "finetune.json").read_text())
    assert set(record["before"]) >= {"AP", "AP50", "AR"} and set(record["after"]) >= {"AP", "AP50", "AR"}
    assert record["arch"] == space.min()
    # the teacher's heatmaps are part of the loss: without them the same run sees other losses
    with_teacher = _finetune(tmp_path / "b", tiny_supernet, synth_small)
    without = _finetune(tmp_path / "c", tiny_supernet, synth_small, "--config", str(_yaml(tmp_path)))
    loss = [json.loads(json.dumps(torch.load(f / "checkpoint.pt", weights_only=True)["log"]))[0]["loss"]
            for f in (with_teacher, without)]
    assert loss[0] > loss[1], "distillation adds a loss term"


@pytest.mark.slow  # a zoo entry's subnet evaluated twice and finetuned a step
def test_finetuning_starts_from_the_inherited_ap_a_search_reports(tmp_path, monkeypatch):
    """BN is calibrated as the search and the card calibrate it (on the supernet's own training
    set), not on the finetuning data: "before" is the AP the user saw in the search."""
    monkeypatch.setenv("POSENAS_CACHE", str(tmp_path / "cache"))
    for name, seed in (("val", 2), ("train", 4)):
        generate(tmp_path / name, 8, seed=seed, progress=False)
    out = tmp_path / "ft"
    assert main(["finetune", "--supernet", "zoo:cpu-synth", "--arch", "litepose_xs", "--data", str(tmp_path / "train"),
                 "--val-data", str(tmp_path / "val"), "--epochs", "1", "--lr", "1e-30", "--batch-size", "8",
                 "--workers", "0", "--no-cache", "--repeats", "3", "--warmup", "1", "--out", str(out),
                 "--config", str(_yaml(tmp_path))]) == 0  # no teacher: its calibration would double the time
    (folder,) = out.iterdir()
    before = json.loads((folder / "finetune.json").read_text())["before"]["AP"]
    supernet = TrainedSupernet.load("zoo:cpu-synth")
    searched = supernet.evaluate(supernet.space.resolve("litepose_xs"), CocoPoseDataset(*set_files(tmp_path / "val")))
    assert before == pytest.approx(searched["AP"], abs=1e-6) and before > 0.1
    regenerated = sorted(p.name for p in (tmp_path / "cache").glob("synthetic-*"))  # calibration images only: the
    assert regenerated == ["synthetic-seed1-256x256-64"], regenerated    # entry's 8,000 are not trained on here


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
    assert card["latency"]["process"] != os.getpid() and "searched" not in card["latency"]  # measured anew only
    assert card["latency"]["runtime"]["threads"] == 1 and card["macs"] > 0
    assert card["latency"]["network_ms"] >= 0 and card["latency"]["grouping_ms"] > 0 and card["latency"]["slowdown"] > 0
    net, loaded_card = nas.load_subnet(out)
    assert loaded_card == card
    space = TrainedSupernet.load(tiny_supernet).space
    # model.onnx holds the network and the in-graph decoding; its people equal the torch decoder's
    image = cv2.imread(str(next((synth_small / "images").iterdir())))
    x, matrix = prepare(image, 96)
    ort = session((out / "model.onnx").read_bytes()).run(None, {INPUT: x[None]})
    every_peak = DecodeConfig(detection_threshold=0.0)  # a barely trained net: take every peak as a joint
    with torch.no_grad():
        (expected, expected_scores), = decode_batch(AE, net(torch.from_numpy(x[None])), [matrix], 96, COCO, every_peak)
    people, scores = people_from_deployed(AE, ort, matrix, 96, COCO, every_peak)
    assert len(people) > 0 and people.shape == expected.shape and np.abs(people - expected).max() <= 1e-3
    assert np.abs(scores - expected_scores).max() <= 1e-4
    assert json.loads((out / "arch.json").read_text()) == space.canonical(space.max())
    capsys.readouterr()
    assert main(["eval", "--ann", str(synth_small / "annotations.json"), "--images", str(synth_small / "images"),
                 "--checkpoint", str(out), "--json"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out.splitlines()[-1])["AP"] == pytest.approx(card["metrics"]["AP"], abs=1e-6)
    assert card["source"]["synthetic"] and "learned from synthetic figures only" in said.err  # the tiny supernet's data
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
    (expected, expected_scores), = decode_batch(QUERY, outputs, [matrix], 96, COCO, every, refine=refine)
    people, scores = people_from_deployed(QUERY, ort, matrix, 96, COCO, every, refine)
    assert len(people) == space.max()["head"]["queries"] == len(expected)
    assert np.abs(people - expected).max() <= 1e-2 and np.abs(scores - expected_scores).max() <= 1e-4
    # joints scoring under missing_below move where the completer puts them; the others stay
    with torch.no_grad():
        for layer in net.query.layers:
            layer.joint_logit.weight.normal_(0, 1.0)
            layer.offset.weight.normal_(0, 0.2)
        outputs = net(torch.from_numpy(x[None]))
    (plain, _), = decode_batch(QUERY, outputs, [matrix], 96, COCO, every)
    half = DecodeConfig(person_threshold=0.0, missing_below=float(np.median(plain[..., 2])))
    (refined, _), = decode_batch(QUERY, outputs, [matrix], 96, COCO, half, refine=refine)
    kept = plain[..., 2] >= half.missing_below
    assert kept.any() and (~kept).any()
    assert np.array_equal(refined[kept], plain[kept]) and not np.allclose(refined[~kept], plain[~kept])


def _export(supernet, arch, out, *extra):
    return main(["export", "--supernet", str(supernet), "--arch", arch, "--out", str(out), "--no-cache",
                 "--latency-of", "network", "--repeats", "3", "--warmup", "1", *extra])


@pytest.mark.slow
def test_an_export_card_binds_every_file_of_its_folder(tmp_path, tiny_supernet, capsys):
    small, large = tmp_path / "min", tmp_path / "max"
    assert _export(tiny_supernet, "min", small) == 0 and _export(tiny_supernet, "max", large) == 0
    for name in ("model.safetensors", "arch.json", "model.onnx"):  # a folder mixed from two exports
        mixed = tmp_path / f"mixed-{name}"
        shutil.copytree(small, mixed)
        shutil.copy(large / name, mixed / name)
        with pytest.raises(PoseNASError, match=f"{name}: SHA-256 differs"):
            load_subnet(mixed)
    weights = small / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one weight changed
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["eval", "--ann", "x.json", "--checkpoint", str(small)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.safetensors: SHA-256 differs" in err and len(err.splitlines()) == 1
    card = json.loads((large / "card.json").read_text())
    (large / "card.json").write_text(json.dumps({**card, "files": {**card["files"], "../min/arch.json": "0"}}))
    with pytest.raises(PoseNASError, match="names a file outside its folder"):
        load_subnet(large)
    (large / "model.onnx").unlink()
    with pytest.raises(PoseNASError, match="model.onnx: missing"):
        load_subnet(large)
    (large / "card.json").write_text(json.dumps({k: v for k, v in card.items() if k != "files"}))
    with pytest.raises(PoseNASError, match="lists no hashes"):
        load_subnet(large)
    (large / "card.json").unlink()
    with pytest.raises(PoseNASError, match="not an exported subnet"):
        load_subnet(large)


@pytest.mark.slow
def test_an_export_folder_is_replaced_whole_by_one_writer_at_a_time(tmp_path, tiny_supernet):
    out = tmp_path / "export"
    assert _export(tiny_supernet, "min", out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with writer_lock(out):  # another writer holds the folder: a second export is refused, nothing touched
        refused = subprocess.run([POSENAS, "export", "--supernet", str(tiny_supernet), "--arch", "max", "--out",
                                  str(out), "--no-cache", "--latency-of", "network", "--repeats", "3"],
                                 capture_output=True, text=True)
    assert refused.returncode == 2 and f"in use by pid {os.getpid()}" in refused.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # what a kill leaves: a half-written staged folder beside, or the old folder set aside
    (tmp_path / ".export.x1.tmp").mkdir()
    (tmp_path / ".export.x1.tmp" / "model.safetensors").write_bytes(b"half")
    os.rename(out, tmp_path / ".export.old")
    recover_folder(out)
    assert load_subnet(out)[1] == json.loads(before["card.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    child = subprocess.Popen([POSENAS, "export", "--supernet", str(tiny_supernet), "--arch", "max", "--out",
                              str(out), "--no-cache", "--latency-of", "network", "--repeats", "3"])
    lock = tmp_path / ".export.lock"
    while child.poll() is None and f"pid {child.pid}" not in _text(lock):
        time.sleep(0.01)
    child.kill()  # SIGKILL while it writes (or just after): the folder is the old export or the new one, whole
    child.wait()
    tiny = SearchSpace.load("tiny")
    old, new = (arch_hash(tiny.canonical(a)) for a in (tiny.min(), tiny.max()))
    assert load_subnet(out)[1]["arch_hash"] in {old, new}
    assert _export(tiny_supernet, "max", out) == 0
    assert load_subnet(out)[1]["arch_hash"] == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "no lock, staged or old folder is left"


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_the_old_export_whole(tmp_path, tiny_supernet, capsys):
    disk = tmp_path / "disk"  # 600 kB: room for the smallest subnet's export, not for the largest's beside it
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("needs a small file system to fill (mount -t tmpfs, as root)")
    try:
        out = disk / "export"
        assert _export(tiny_supernet, "min", out) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        capsys.readouterr()
        assert _export(tiny_supernet, "max", out) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
        assert len(errors) == 1 and "No space left on device" in errors[0]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before and load_subnet(out)[1]["macs"] > 0
        assert sorted(p.name for p in disk.iterdir()) == ["export"], "nothing half-written is left"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_an_export_refuses_a_place_that_is_not_its_own(tmp_path, tiny_supernet, capsys):
    notes = tmp_path / "mine" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("keep me")
    assert _export(tiny_supernet, "min", notes.parent) == 2
    assert "holds files that are not an export's (notes.txt)" in capsys.readouterr().err
    assert _export(tiny_supernet, "min", notes) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in notes.parent.iterdir()) == ["notes.txt"] and notes.read_text() == "keep me"


def test_metrics_cocoeval_leaves_undefined_are_printed_and_stored_as_such(tmp_path, tiny_supernet, capsys):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],  # one small person: no APL
          "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 30], "iscrowd": 0,
                           "keypoints": [20, 20, 2] * 17, "num_keypoints": 17, "area": 600.0}],
          "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.keypoints)}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    assert _export(tiny_supernet, "min", tmp_path / "export", "--ann", str(tmp_path / "gt.json"), "--images",
                   str(tmp_path)) == 0
    assert "APL undefined" in capsys.readouterr().out
    assert json.loads((tmp_path / "export" / "card.json").read_text())["metrics"]["APL"] is None


def test_pareto_winners_best_first_and_errors(tmp_path):
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps({"pareto": [{"AP": 0.1, "arch": {"a": 1}}, {"AP": 0.3, "arch": {"a": 2}}]}))
    assert [p["arch"] for p in pareto_winners(path, 1)] == [{"a": 2}] and len(pareto_winners(path, 5)) == 2
    path.write_text(json.dumps({"pareto": [{"AP": 0.1, "arch": {"a": 1}}, {"AP": "high", "arch": {"a": 2}}]}))
    with pytest.raises(PoseNASError, match=r"pareto\[1\] needs an 'arch' config and a numeric 'AP'"):
        pareto_winners(path, 1)
    path.write_text(json.dumps({"pareto": []}))
    with pytest.raises(PoseNASError, match="Pareto set is empty"):
        pareto_winners(path, 1)
    path.write_text("[]")
    with pytest.raises(PoseNASError, match="not a pareto.json"):
        pareto_winners(path, 1)


def test_an_int8_target_exports_its_model_checked_against_fp32_on_real_images(tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["export", "--supernet", "zoo:cpu-synth", "--arch", "litepose_xs", "--out", str(out),
                 "--ann", str(COCO_MINI / "annotations" / "person_keypoints_val.json"),
                 "--images", str(COCO_MINI / "images"), "--target", "onnxruntime/int8/1", "--repeats", "3",
                 "--warmup", "1", "--no-cache"]) == 0
    card = json.loads((out / "card.json").read_text())
    kept = card["precision"]["against_fp32"]
    assert card["precision"]["file"] == "model.int8.onnx" and card["latency"]["target"] == "onnxruntime/int8/1"
    assert kept["images"] == 20 and kept["people"] >= 5 and kept["share"] >= 0.9 and 0.5 < kept["mean_oks"] < 1
    assert f"finds {kept['found']} of the fp32 model's {kept['people']} people" in capsys.readouterr().out
    int8 = (out / "model.int8.onnx").read_bytes()
    assert int8 != (out / "model.onnx").read_bytes() and b"QuantizeLinear" in int8
    load_subnet(out)  # its hash is on the card: a changed int8 model is refused like any file
    (out / "model.int8.onnx").write_bytes(int8[:-10] + bytes(10))
    with pytest.raises(PoseNASError, match="model.int8.onnx: SHA-256 differs"):
        load_subnet(out)


@pytest.mark.slow  # two exports of zoo:cpu-synth, each measured by a fresh process
def test_eval_and_predict_run_the_exported_model_of_a_target(tmp_path, capsys):
    out = tmp_path / "int8"
    ann, images = (Path(f) for f in synthetic_set(tmp_path / "val", 16, 2))  # the entry's own kind of images
    assert main(["export", "--supernet", "zoo:cpu-synth", "--arch", "litepose_xs", "--out", str(out), "--target",
                 "onnxruntime/int8/1", "--repeats", "3", "--warmup", "1", "--no-cache"]) == 0
    aps = {}
    for target in (None, "onnxruntime/fp32/1", "onnxruntime/int8/1", "openvino/int8/1"):
        if target and target.startswith("openvino") and not importable("openvino"):
            continue
        capsys.readouterr()
        assert main(["eval", "--ann", str(ann), "--images", str(images), "--checkpoint", str(out), "--json"]
                    + (["--target", target] if target else [])) == 0
        aps[target] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["AP"]
    assert aps["onnxruntime/fp32/1"] == pytest.approx(aps[None], abs=1e-3)  # the exported graph scores as torch
    assert aps["onnxruntime/int8/1"] != aps[None] and aps[None] > 0.2  # the quantized model ran
    photo = next((COCO_MINI / "images").iterdir())
    assert main(["predict", str(photo), "--checkpoint", str(out), "--target", "onnxruntime/int8/1",
                 "--out", str(tmp_path / "drawn.png")]) == 0 and (tmp_path / "drawn.png").stat().st_size > 0
    assert main(["eval", "--ann", str(ann), "--images", str(images), "--checkpoint", str(out), "--target",
                 "openvino/int4/1"]) == 2
    assert "precision 'int4' unknown" in capsys.readouterr().err
    fp32_only = tmp_path / "fp32"
    assert main(["export", "--supernet", "zoo:cpu-synth", "--arch", "min", "--out", str(fp32_only), "--repeats", "3",
                 "--warmup", "1", "--no-cache"]) == 0
    assert main(["predict", str(photo), "--checkpoint", str(fp32_only), "--target",
                 "onnxruntime/int8/1", "--out", str(tmp_path / "x.png")]) == 2
    assert "holds no int8 model; export it with --target RUNTIME/int8/THREADS" in capsys.readouterr().err


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
