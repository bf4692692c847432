"""`posenas run`: the whole pipeline into one run folder, each stage resumable, configs checked first."""
import json

import pandas as pd
import pytest
import yaml

import nas
from nas.app.cli import main
from nas.app.pipeline import STAGES

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
    ("supernet: {phases: [{epochs: 1, lr: -0.1}]}\nsearch: {latency_budget_ms: 5}\n",
     "phases[0].lr must be a positive number, got -0.1"),
    ("supernet: {phases: [{epochs: .inf}]}\nsearch: {latency_budget_ms: 5}\n",
     "phases[0].epochs must be a positive number, got inf"),
    ("search: {latency_budget_ms: 5, trials: 0}\n", "setting 'trials' must be at least 1, got 0"),
    ("search: {latency_budget_ms: 5, population: 1}\n", "setting 'population' must be at least 2, got 1"),
    ("search: {latency_budget_ms: 5, macs_budget: -3}\n", "macs_budget -3: give a positive number of MACs"),
    ("latency: {repeats: 0}\nsearch: {latency_budget_ms: 5}\n", "repeats 3 to 10000"),
])
def test_bad_run_configs_fail_with_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists(), "nothing is written before the config is checked"
