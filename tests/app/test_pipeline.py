"""`posenas run`: the whole pipeline into one run folder, each stage resumable, configs checked first."""
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import nas
from nas.app.cli import main
from nas.app.pipeline import STAGES, Pipeline
from nas.train.supernet import parse_phases
from search_spaces import SearchSpace
from tests.conftest import COCO_MINI, FIXTURES

TINY_RUN = {
    "name": "t", "space": "tiny", "data": {"train_images": 8, "val_images": 6, "size": [96, 96]},
    "supernet": {"batch_size": 4, "workers": 0, "eval_archs": [],
                 "phases": [{"name": "all", "epochs": 1, "elastic": ["resolution", "kernel", "depth", "width"]}]},
    "latency": {"warmup": 1, "repeats": 3},
    "search": {"latency_budget_ms": 1000, "trials": 3, "eval_images": 6, "calib_images": 8, "seed": 0},
    "finetune": {"top": 1, "epochs": 1, "batch_size": 4, "workers": 0, "calibration_images": 8},
    "baselines": ["min", "max"],
}


def _config(tmp_path, cfg=TINY_RUN):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # every stage at tiny scale, three times: about a minute
def test_run_writes_one_folder_and_resumes_each_stage(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads((out / "stages.json").read_text()) == list(STAGES)
    assert f"Pareto plot: {out / 'pareto.png'}" in printed and "exported winner:" in printed
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (out / "pareto.svg").read_text()
    assert "Pareto set" in svg and "latency budget 1000 ms" in svg and "finetuned winner" in svg
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["kind"]) == {"preset", "pareto", "winner"}
    assert list(summary.loc[summary["kind"] == "preset", "name"]) == ["min", "max"]
    (export,) = summary.loc[summary["kind"] == "winner", "export"]
    net, card = nas.load_subnet(export)
    assert card["onnx"]["max_abs_difference"] <= 1e-4 and card["resolution"] in (64, 96)
    trials = pd.read_csv(out / "search" / "trials.csv")
    assert len(trials) == TINY_RUN["search"]["trials"] and (out / "search" / "study.db").exists()

    # a second run skips every finished stage and leaves their outputs alone
    stamp = (out / "supernet" / "supernet.pt").stat().st_mtime_ns
    assert main(["run", str(_config(tmp_path)), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done earlier") == len(STAGES)
    assert (out / "supernet" / "supernet.pt").stat().st_mtime_ns == stamp

    # a stage cut short resumes from its own checkpoint: finetuning picks up its run, export is redone
    (out / "stages.json").write_text(json.dumps(list(STAGES[:-2])))
    card_path = next((out / "finetune").glob("*/export/card.json"))
    card_path.unlink()
    assert main(["run", str(_config(tmp_path)), "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().out and card_path.exists()


def _coco_run(train_ann, train_images, val_ann, val_images, **data) -> dict:
    """TINY_RUN on COCO-format sets."""
    sets = {"train": {"ann": str(train_ann), "images": str(train_images)},
            "val": {"ann": str(val_ann), "images": str(val_images)}}
    return {**TINY_RUN, "data": {**sets, **data}, "supernet": {**TINY_RUN["supernet"], "batch_size": 2},
            "finetune": {**TINY_RUN["finetune"], "batch_size": 2}}


@pytest.mark.slow  # every stage at tiny scale on real images, twice: about three minutes
def test_a_run_on_coco_format_sets_ends_in_exports_scored_on_them(tmp_path, capsys):
    mini, crowd = COCO_MINI, FIXTURES / "crowdpose"
    val = mini / "annotations" / "person_keypoints_val.json"
    out = tmp_path / "coco"
    config = _coco_run(mini / "annotations" / "person_keypoints_train.json", mini / "images", val, mini / "images")
    config["supernet"] = {**config["supernet"], "processes": 2}  # the supernet stage under torchrun (gloo here)
    assert main(["run", str(_config(tmp_path, config)), "--out", str(out)]) == 0
    assert (out / "supernet.yaml").exists() and (out / "supernet" / "supernet.pt").exists()
    assert not (out / "data").exists(), "the user's sets are used where they are"
    (export,) = (str(p.parent) for p in out.glob("finetune/*/export/card.json"))
    capsys.readouterr()
    assert main(["eval", "--ann", str(val), "--images", str(mini / "images"), "--checkpoint", export, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["AP"] >= 0  # pycocotools on coco-mini val
    assert nas.load_subnet(export)[1]["num_keypoints"] == 17
    crowdpose = crowd / "test_crowdpose.json"  # two images: trained, searched and scored on both
    out = tmp_path / "crowdpose"
    assert main(["run", str(_config(tmp_path, _coco_run(crowdpose, crowd, crowdpose, crowd))), "--out", str(out)]) == 0
    (export,) = out.glob("finetune/*/export")
    net, card = nas.load_subnet(export)
    assert card["spec"] == "crowdpose" and card["num_keypoints"] == 14 and net.num_keypoints == 14
    assert {"AP_easy", "AP_medium", "AP_hard"} <= card["metrics"].keys()
    assert "AP_medium" in pd.read_csv(out / "summary.csv").columns  # both fixture images are medium crowds


@pytest.mark.parametrize("name, spec", [("coco.yaml", None), ("crowdpose.yaml", "crowdpose")])
def test_the_shipped_gpu_configs_check_in_every_section(name, spec):
    run = Pipeline(name, "unused")  # every section checked, nothing read or written: the data is not here
    sn = run.supernet_cfg
    assert (sn.space, sn.spec, run.processes, sn.augment, sn.flip_test) == ("default", spec, 8, True, True)
    assert [p.elastic for p in parse_phases(sn)][-1] == ("resolution", "kernel", "depth", "width", "token")
    assert max(SearchSpace.load(sn.space).choices("resolution")) == 512
    assert run.search_cfg.flip_test and run.finetune_cfg.augment and run.finetune_cfg.spec == spec
    assert set(run.baselines) <= set(SearchSpace.load("default").preset_names())
    assert not Path("unused").exists()


def test_the_embedded_default_searches_the_shipped_supernet_and_scratch_trains_one():
    main_job = Pipeline(None, "unused")  # nothing read or written
    assert main_job.supernet_cfg is None and main_job.supernet == "zoo:cpu-synth"
    assert main_job.search_cfg.accuracy_predictor == "zoo:cpu-synth" and main_job.runtime.latency_of == "total"
    assert main_job.data["val_seed"] != main_job.data["train_seed"]
    scratch = Pipeline("scratch.yaml", "unused")
    assert scratch.supernet_cfg.space == "cpu" and scratch.supernet_cfg.time_budget_min == 12
    assert scratch.search_cfg.accuracy_predictor is None and scratch.search_cfg.latency_budget_ms == 6
    assert main_job.runtime.target == "onnxruntime/fp32/1"  # the default target
    assert not Path("unused").exists()


def test_a_run_config_names_its_target(tmp_path):
    path = tmp_path / "int8.yaml"
    path.write_text("latency: {target: openvino/int8/2, repeats: 7}\nsearch: {latency_budget_ms: 5}\n")
    runtime = Pipeline(str(path), str(tmp_path / "unused")).runtime
    assert (runtime.backend, runtime.precision, runtime.threads, runtime.repeats) == ("openvino", "int8", 2, 7)


def test_a_run_config_may_name_several_targets_for_the_front_to_pick_from(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("latency: {target: [onnxruntime/fp32/1, onnxruntime/int8/1], repeats: 7}\n"
                    "search: {latency_budget_ms: 5, accuracy_predictor: zoo:cpu-synth}\n")
    run = Pipeline(str(path), str(tmp_path / "r"))
    assert [(r.target, r.repeats) for r in run.runtimes] == [("onnxruntime/fp32/1", 7), ("onnxruntime/int8/1", 7)]
    searches = {t: (Path(c.out).relative_to(tmp_path), Path(c.predictor).name) for t, c in run.search_cfgs.items()}
    assert searches == {"onnxruntime/fp32/1": (Path("r/search/onnxruntime-fp32-1"),
                                               "latency-predictor-onnxruntime-fp32-1.json"),
                        "onnxruntime/int8/1": (Path("r/search/onnxruntime-int8-1"),
                                               "latency-predictor-onnxruntime-int8-1.json")}
    assert run.runtime.target == "onnxruntime/fp32/1"  # the baselines' target


@pytest.mark.parametrize("flaw, message", [
    (lambda d, t: d.update(train={"ann": str(t / "missing.json"), "images": str(t)}), "annotation file not found"),
    (lambda d, t: d.update(val={"ann": str(t / "broken.json"), "images": str(t)}), "broken.json: malformed JSON"),
    (lambda d, t: d.update(val={"ann": str(FIXTURES / "crowdpose" / "test_crowdpose.json"),
                                "images": str(FIXTURES / "crowdpose")}), "crowdpose keypoints, but the training set"),
    (lambda d, t: d["val"].update(images=str(t)), "image file not found (image id"),
    (lambda d, t: d.update(train_images=8), "data is either synthetic (['train_images']) or COCO-format"),
    (lambda d, t: d.update(val={"ann": str(t / "broken.json")}), "data.val must be {ann: GT.json, images: FOLDER}"),
])
def test_bad_data_stops_a_run_before_any_stage(tmp_path, capsys, flaw, message):
    mini = COCO_MINI
    (tmp_path / "broken.json").write_text('{"images": [')
    data = _coco_run(mini / "annotations" / "person_keypoints_train.json", mini / "images",
                     mini / "annotations" / "person_keypoints_val.json", mini / "images")["data"]
    flaw(data, tmp_path)
    config = _config(tmp_path, {**TINY_RUN, "data": data})
    assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.json", "run.yaml"], "nothing written"


@pytest.mark.parametrize("text,message", [
    ("data: [1, 2", "malformed YAML"),
    ("colour: red\n", "unknown section(s) ['colour']"),
    ("data: {images: 3}\n", "unknown data setting(s) ['images']"),
    ("supernet: {epochs: ten}\n", "unknown setting(s) ['epochs']"),
    ("supernet: {batch_size: ten}\n", "setting 'batch_size' must be int, got 'ten'"),
    ("search: {trials: 3}\n", "search.latency_budget_ms is required"),
    ("search: {latency_budget_ms: 5, budget: 3}\n", "(search): unknown setting(s) ['budget']"),
    ("search: {latency_budget_ms: -1}\n", "setting 'latency_budget_ms' must be above 0, got -1"),
    ("latency: {threads: many}\nsearch: {latency_budget_ms: 5}\n", "setting 'threads' must be int, got 'many'"),
    ("finetune: {lr: fast}\nsearch: {latency_budget_ms: 5}\n", "setting 'lr' must be float, got 'fast'"),
    ("finetune: {lr: .nan}\nsearch: {latency_budget_ms: 5}\n", "setting 'lr' must be a finite number, got nan"),
    ("finetune: {epochs: 0}\nsearch: {latency_budget_ms: 5}\n", "setting 'epochs' must be above 0, got 0"),
    ("supernet: {batch_size: 0}\n", "setting 'batch_size' must be at least 1 and at most 4096, got 0"),
    ("supernet: {checkpoint_every: 0}\n", "setting 'checkpoint_every' must be at least 1, got 0"),
    ("supernet: {processes: 0}\nsearch: {latency_budget_ms: 5}\n", "processes must be an integer from 1 to 1024"),
    ("supernet: {phases: [{epochs: 1, lr: -0.1}]}\nsearch: {latency_budget_ms: 5}\n",
     "phases[0].lr must be a positive number, got -0.1"),
    ("supernet: {phases: [{epochs: .inf}]}\nsearch: {latency_budget_ms: 5}\n",
     "phases[0].epochs must be a positive number, got inf"),
    ("search: {latency_budget_ms: 5, trials: 0}\n", "setting 'trials' must be at least 1, got 0"),
    ("search: {latency_budget_ms: 5, population: 1}\n", "setting 'population' must be at least 2, got 1"),
    ("search: {latency_budget_ms: 5, macs_budget: -3}\n", "macs_budget -3: give a positive number of MACs"),
    ("latency: {repeats: 0}\nsearch: {latency_budget_ms: 5}\n", "repeats 3 to 10000"),
    ("latency: {target: onnxruntime/int8}\nsearch: {latency_budget_ms: 5}\n",
     "bad.yaml (latency): target 'onnxruntime/int8': give RUNTIME/PRECISION/THREADS"),
    ("latency: {target: onnxruntime/int4/1}\nsearch: {latency_budget_ms: 5}\n", "precision 'int4' unknown"),
    ("latency: {target: [onnxruntime/fp32/1, openvino/int4/1]}\nsearch: {latency_budget_ms: 5}\n",
     "precision 'int4' unknown"),
    ("latency: {target: []}\nsearch: {latency_budget_ms: 5}\n", "target: give one target or a list of 1 to 4"),
    ("latency: {target: [onnxruntime/fp32/1, onnxruntime/fp32/1]}\nsearch: {latency_budget_ms: 5}\n",
     "a list of 1 to 4 different ones"),
    ("latency: {target: [onnxruntime/fp32/1, onnxruntime/int8/1]}\nsearch: {latency_budget_ms: 5, predictor: m.json}\n",
     "with several latency targets each searches on its own latency model and study; leave out search.predictor"),
])
def test_bad_run_configs_fail_with_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists(), "nothing is written before the config is checked"
