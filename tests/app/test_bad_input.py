"""The bad-input suite: every command, fed what users get wrong, answers with one line naming the
problem and exit status 2, and leaves existing run folders as they were."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from nas.app.cli import main
from search_spaces import SearchSpace
from tests.conftest import held_elsewhere


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_supernet, synth_small):
    """Real runs to damage and bad files to feed: {name: path}."""
    root = tmp_path_factory.mktemp("bad")
    w = {"root": root, "supernet": tiny_supernet, "data": synth_small, "ann": synth_small / "annotations.json"}
    (root / "broken.json").write_text('{"resolution": 64,')
    (root / "broken-config.yaml").write_text("phases: [1, 2\n")
    (root / "nameless-zoo.yaml").write_text("space: tiny\n")
    default = Path(SearchSpace.load("default").source).read_text()
    (root / "late-bottleneck.yaml").write_text(default.replace("[basic, mbconv]", "[bottleneck, mbconv]", 1))
    (root / "short-token").write_text("hunter2\n")
    gt = json.loads((synth_small / "annotations.json").read_text())
    people = [a for a in gt["annotations"] if a["num_keypoints"] > 0]
    (root / "nan-results.json").write_text(json.dumps([{"image_id": a["image_id"], "score": float("nan"),
                                                        "keypoints": [float("nan")] * 51} for a in people]))
    (root / "duplicate-ids.json").write_text(json.dumps({**gt, "annotations": gt["annotations"] + people[:1]}))
    (root / "not-a-checkpoint.pt").write_bytes(b"\x00not torch\x00" * 10)
    (root / "text.jpg").write_text("this is not an image")
    cpu_arch = SearchSpace.load("cpu").max()
    (root / "cpu-arch.json").write_text(json.dumps(cpu_arch))  # a config of another space than tiny's
    outside = SearchSpace.load("tiny").max()
    outside["stages"][0]["branches"][0]["kernel"] = 9
    (root / "outside.json").write_text(json.dumps(outside))
    crowdpose = [{"image_id": 1, "keypoints": [1.0, 2.0, 1.0] * 14, "score": 0.9}]
    (root / "crowdpose-results.json").write_text(json.dumps(crowdpose))
    (root / "empty-pareto.json").write_text(json.dumps({"pareto": []}))
    bad_images = root / "bad-images"  # a dataset whose image files are text
    shutil.copytree(synth_small, bad_images)
    for image in (bad_images / "images").iterdir():
        image.write_text("not a jpeg")
    export = root / "export"  # a real export, then one weight changed
    assert main(["export", "--supernet", str(tiny_supernet), "--arch", "min", "--out", str(export), "--no-cache",
                 "--repeats", "3", "--warmup", "1"]) == 0
    data = bytearray((export / "model.safetensors").read_bytes())
    data[-3] ^= 0x55
    (export / "model.safetensors").write_bytes(bytes(data))
    (root / "no-search").mkdir()
    w.update({p.stem: p for p in root.iterdir()})
    w["locked"] = root / "locked"
    with held_elsewhere(w["locked"]):  # a folder another process writes, for the whole suite
        yield w


def cases(w):
    """(command line, what the one-line error must say, the run folder that must stay intact or None)."""
    sup, data, ann, r = str(w["supernet"]), str(w["data"]), str(w["ann"]), w["root"]
    run_dir = Path(sup).parent
    return [
        (["data", "check", "--ann", str(r / "missing.json")], "annotation file not found", None),
        (["data", "check", "--ann", str(w["broken"])], "broken.json: malformed JSON", None),
        (["data", "check", "--ann", str(w["bad-images"] / "annotations.json"), "--images",
          str(w["bad-images"] / "images")], "not a readable image", None),
        (["eval", "--ann", ann, "--results", str(r / "missing.json")], "not found", None),
        (["eval", "--ann", ann, "--results", str(w["broken"])], "broken.json: malformed JSON", None),
        (["eval", "--ann", ann, "--results", str(w["crowdpose-results"])], "results file for another dataset", None),
        (["eval", "--ann", ann, "--checkpoint", str(w["not-a-checkpoint"])], "not a readable PoseNAS", None),
        (["eval", "--ann", ann, "--checkpoint", str(w["export"])], "SHA-256 differs", None),
        (["train", "--config", str(w["broken-config"]), "--out", str(r / "t")], "malformed YAML", None),
        (["train", "--data", data, "--space", "tiny", "--arch", str(w["outside"]), "--out", str(r / "t")],
         "kernel = 9 is not allowed", None),
        (["train", "--data", str(w["bad-images"]), "--space", "tiny", "--arch", "min", "--workers", "0",
          "--out", str(r / "t2")], "not a readable image", None),
        (["train-supernet", "--config", str(w["broken-config"]), "--out", str(r / "s")],
         "malformed YAML", None),
        (["train-supernet", "--data", data, "--space", "cpu", "--out", str(run_dir)], "another search space",
         run_dir),
        (["eval-subnet", "--supernet", str(w["not-a-checkpoint"]), "--arch", "min", "--data", data],
         "not a readable PoseNAS supernet checkpoint", None),
        (["eval-subnet", "--supernet", sup, "--arch", str(w["cpu-arch"]), "--data", data], "cpu-arch.json:", None),
        (["eval-subnet", "--supernet", sup, "--arch", str(w["broken"]), "--data", data], "malformed JSON", None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "0.0001", "--out", str(run_dir),
          "--no-cache", "--repeats", "3"], "no subnet can meet it", run_dir),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "50", "--macs-budget", "1000",
          "--out", str(run_dir)], "no subnet can meet it", run_dir),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "50", "--macs-budget", "lots"],
         "--macs-budget 'lots'", None),
        (["search", "--supernet", str(w["not-a-checkpoint"]), "--data", data, "--latency-budget", "5"],
         "not a readable PoseNAS supernet checkpoint", None),
        (["finetune", "--supernet", sup, "--pareto", str(w["empty-pareto"]), "--val-data", data, "--out",
          str(run_dir)], "Pareto set is empty", run_dir),
        (["finetune", "--supernet", sup, "--arch", str(w["outside"]), "--val-data", data, "--out", str(r / "f")],
         "kernel = 9 is not allowed", None),
        (["export", "--supernet", sup, "--arch", str(r / "missing.json"), "--out", str(w["export"])],
         "arch config not found", w["export"]),
        (["predict", str(w["text"]), "--checkpoint", str(w["not-a-checkpoint"]), "--out", str(r / "p.png")],
         "not a readable PoseNAS", None),
        (["predict", str(w["text"]), "--checkpoint", str(w["export"]), "--out",
          str(r / "p.png")], "SHA-256 differs", None),
        (["plot", "--run", str(w["no-search"])], "no search results", None),
        (["run", str(w["broken-config"]), "--out", str(run_dir)], "malformed YAML", run_dir),
        (["run", str(r / "missing.yaml")], "run config not found", None),
        (["latency", "measure", "--arch", str(w["broken"]), "--no-cache"], "malformed JSON", None),
        (["latency", "measure", "--preset", "min", "--url", "http://127.0.0.1:9", "--no-cache"], "unreachable",
         None),
        (["arch", "macs", "--space", "tiny", "--arch", str(w["cpu-arch"])], "cpu-arch.json:", None),
        (["arch", "macs", "--space", str(r / "missing-space.yaml"), "--preset", "min"], "missing-space.yaml", None),
        (["arch", "presets", "--space", str(w["late-bottleneck"])], "'bottleneck' is for the first stage only", None),
        (["arch", "macs", "--space", "default", "--preset", "min", "--head", "query"],
         "head.type 'query' is not in space", None),
        (["bench", "--only", "everything"], "unknown figure(s) ['everything']", None),
        (["zoo", "build", str(r / "missing.yaml"), "--out", str(r / "z")], "run config not found", None),
        (["completion", "train", "--synthetic", "0", "--out", str(r / "c")], "give --ann files or --synthetic", None),
        (["completion", "train", "--synthetic", "-5", "--out", str(r / "c")],
         "argument --synthetic: -5 is not allowed: give a number at least 0", None),
        (["completion", "train", "--synthetic", "10", "--steps", "0", "--out", str(r / "c")],
         "argument --steps: 0 is not allowed: give a number at least 1", None),
        (["completion", "eval", str(r), "--ann", ann], "skeleton completer card not found", None),
        (["completion", "eval", str(r), "--ann", ann, "--drop", "1.5"],
         "argument --drop: 1.5 is not allowed: give a number above 0 and at most 1", None),
        (["eval", "--ann", ann, "--checkpoint", str(r / "ckpt.pt"), "--refine", str(r)],
         "skeleton completer card not found", None),
        (["zoo", "build", str(w["nameless-zoo"]), "--out", str(r / "z")], "a zoo config needs a name", None),
        (["eval-subnet", "--supernet", "zoo:nope", "--arch", "min", "--data", data], "zoo:nope: no such zoo", None),
        (["predictor", "build", "--supernet", sup, "--data", data, "--samples", "3", "--out", str(r / "acc")],
         "--samples 3: give at least 10", None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "5", "--accuracy-predictor",
          str(w["broken"]), "--predictor", str(w["broken"]), "--out", str(run_dir)], "broken.json", run_dir),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "5", "--verify", "0"],
         "argument --verify: 0 is not allowed", None),
        (["latency", "measure", "--preset", "min", "--latency-of", "total", "--people", "99", "--no-cache"],
         "--people 99: give 0 to 30", None),
        (["train", "--data", data, "--space", "tiny", "--out", str(w["locked"])], "locked: in use by pid", None),
        (["train-supernet", "--data", data, "--space", "tiny", "--out", str(w["locked"])], "in use by pid", None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "50", "--out", str(w["locked"]),
          "--no-cache", "--repeats", "3"], "in use by pid", None),
        (["finetune", "--supernet", sup, "--arch", "min", "--val-data", data, "--out", str(w["locked"])],
         "in use by pid", None),
        (["export", "--supernet", sup, "--arch", "min", "--out", str(w["locked"]), "--no-cache", "--repeats", "3"],
         "in use by pid", None),
        (["run", "--out", str(w["locked"])], "in use by pid", None),
        (["export", "--supernet", sup, "--arch", "min", "--out", ann, "--no-cache", "--repeats", "3"],
         "exists and is not a folder", None),
        (["train", "--data", data, "--space", "tiny", "--epochs", "nan", "--out", str(r / "t3")],
         "argument --epochs: nan is not allowed: give a number above 0", None),
        (["train", "--data", data, "--space", "tiny", "--batch-size", "0", "--out", str(r / "t3")],
         "argument --batch-size: 0 is not allowed: give a number at least 1", None),
        (["train", "--data", data, "--space", "tiny", "--out", ann], "annotations.json: exists and is not a folder",
         None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "inf"],
         "argument --latency-budget: inf is not allowed", None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "5", "--trials", "2.5"],
         "argument --trials: '2.5' is not an integer", None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "5", "--population", "1"],
         "argument --population: 1 is not allowed: give a number at least 2", None),
        (["data", "synth", "--images", "0", "--out", str(r / "d")], "argument --images: 0 is not allowed", None),
        (["eval-subnet", "--supernet", sup, "--arch", "min", "--data", data, "--limit", "-3"],
         "argument --limit: -3 is not allowed", None),
        (["predict", str(w["text"]), "--checkpoint", str(w["export"]), "--threshold", "1.5", "--out",
          str(r / "p.png")], "argument --threshold: 1.5 is not allowed: give a number at least 0 and at most 1", None),
        (["latency", "measure", "--preset", "min", "--repeats", "-1"], "argument --repeats: -1 is not allowed", None),
        (["zoo", "build", str(w["nameless-zoo"]), "--out", str(r / "z"), "--standalone-epochs=-inf"],
         "argument --standalone-epochs: -inf is not allowed", None),
        (["data", "synth", "--images", "2", "--out", ann], "annotations.json: exists and is not a folder", None),
        (["data", "check", "--ann", ann, "--oracle", "--resolution", "5"], "argument --resolution: 5 is not allowed",
         None),
        (["completion", "train", "--synthetic", "10", "--steps", "2", "--out", ann], "exists and is not a folder",
         None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "50", "--out", ann, "--no-cache",
          "--repeats", "3"], "exists and is not a folder", None),
        (["export", "--supernet", sup, "--arch", "min", "--out", "/proc/posenas-export", "--no-cache", "--repeats",
          "3"], "/proc/posenas-export: cannot write there", None),
        (["eval", "--ann", ann, "--results", str(w["nan-results"])], "NaN or infinite", None),
        (["eval", "--ann", str(w["duplicate-ids"]), "--results", str(w["crowdpose-results"])],
         "'id' must be an integer unique among the annotations", None),
        (["finetune", "--supernet", sup, "--arch", "min", "--top", "0", "--val-data", data, "--out", str(r / "f")],
         "argument --top: 0 is not allowed", None),
        (["predict", str(w["text"]), "--checkpoint", str(w["export"]), "--size", "10", "--out", str(r / "p.png")],
         "argument --size: 10 is not allowed", None),
        (["latency", "build-predictor", "--samples", "12", "--out", ann], "exists and is not a folder", None),
        (["latency", "adapt", "--anchors", "0", "--out", str(w["root"] / "adapted.json")],
         "argument --anchors: 0 is not allowed", None),
        (["predictor", "build", "--supernet", sup, "--data", data, "--samples", "12", "--out", ann],
         "exists and is not a folder", None),
        (["latency-server", "--timeout", "0"], "argument --timeout: 0 is not allowed: give a number at least 0.1", None),
        (["latency-server", "--port", "70000"], "argument --port: 70000 is not allowed", None),
        (["latency-server", "--token-file", str(w["short-token"])], "short-token: a latency token is at least 16",
         None),
        (["latency", "measure", "--preset", "min", "--url", "ftp://device:8765", "--no-cache"],
         "--url 'ftp://device:8765': give http://host:port", None),
        (["latency", "measure", "--preset", "min", "--url", "http://127.0.0.1:9", "--token-file",
          str(r / "missing-token"), "--no-cache"], "missing-token: token file not found", None),
        (["latency", "measure", "--preset", "min", "--target", "onnxruntime", "--no-cache"],
         "--target 'onnxruntime': give RUNTIME/PRECISION/THREADS", None),
        (["latency", "measure", "--preset", "min", "--target", "onnxruntime/fp32/two", "--no-cache"],
         "--target 'onnxruntime/fp32/two': give RUNTIME/PRECISION/THREADS", None),
        (["latency", "measure", "--preset", "min", "--target", "onnxruntime/fp16/1", "--no-cache"],
         "precision 'fp16' unknown", None),
        (["latency", "measure", "--preset", "min", "--target", "tflite/fp32/1", "--no-cache"],
         "target runtime 'tflite' unknown", None),
        (["latency", "measure", "--preset", "min", "--target", "onnxruntime/fp32/999", "--no-cache"],
         "threads 0 to 256", None),
        (["latency", "measure", "--preset", "min", "--target", "torch/int8/1", "--latency-of", "network",
          "--no-cache"], "target torch/int8/1: the torch backend times fp32 only", None),
        (["search", "--supernet", sup, "--data", data, "--latency-budget", "5", "--target", "onnxruntime/int8/"],
         "--target 'onnxruntime/int8/': give RUNTIME/PRECISION/THREADS", None),
    ]


CASES = 90


def test_the_suite_covers_every_command(world):
    assert len(cases(world)) == CASES
    commands = {c[0][0] for c in cases(world)}
    assert commands >= {"data", "eval", "train", "train-supernet", "eval-subnet", "search", "finetune", "export",
                        "predict", "plot", "run", "latency", "arch", "bench", "zoo", "predictor", "completion"}


@pytest.mark.parametrize("index", range(CASES))
def test_bad_input_is_one_line_and_exit_2(world, capsys, index):
    argv, message, keep = cases(world)[index]
    before = snapshot(keep) if keep else None
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("posenas: error: ") and message in last, err[-600:]
    assert "Traceback" not in err and err.count("posenas: error:") == 1
    if keep:
        assert snapshot(keep) == before, f"{keep} changed"
