"""`posenas zoo build|list` and `--supernet zoo:NAME`: an entry made by the one recorded command
loads anywhere, is checked against its SHA-256, and reproduces its card's APs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from nas.app.cli import main
from nas.errors import PoseNASError
from nas.io import sha256
from nas.pose.dataset import CocoPoseDataset, set_files
from nas.search.accuracy import AccuracyPredictor
from nas.subnet import zoo
from nas.subnet.inherit import TrainedSupernet
from search_spaces import SearchSpace, arch_hash
from tests.conftest import TINY_ZOO


def test_entry_holds_weights_card_and_log_without_pickles(tiny_zoo):
    entry = tiny_zoo / "entry"
    assert sorted(p.name for p in entry.iterdir()) == sorted([zoo.WEIGHTS, zoo.CARD, zoo.LOG, zoo.PREDICTOR])
    card = json.loads((entry / zoo.CARD).read_text())
    assert card["sha256"] == sha256(entry / zoo.WEIGHTS)
    assert card["weights_dtype"] == "float16" and card["training"]["steps"] == 3
    assert {row["subnet"] for row in card["evaluation"]["inherited"]} >= {"min", "max", "litepose_xs"}
    assert [(row["subnet"], row["head"]) for row in card["evaluation"]["other_heads"]] == [  # the same backbones
        (row["subnet"], "query") for row in card["evaluation"]["inherited"]]
    assert (entry / zoo.LOG).read_text().startswith("phase,")
    predictor = AccuracyPredictor.load(entry)  # the entry's own: fitted for exactly these weights
    assert predictor.info["evaluation"]["supernet"] == card["sha256"]
    assert card["accuracy_predictor"]["subnets"] >= 10


def test_entry_reproduces_its_card(tiny_zoo, monkeypatch):
    monkeypatch.setenv("POSENAS_CACHE", str(tiny_zoo / "cache"))
    entry = tiny_zoo / "entry"
    card = zoo.read_card(entry)
    supernet = TrainedSupernet.load(entry)  # calibrated on images regenerated from the card's recipe
    val = CocoPoseDataset(*set_files(tiny_zoo / "run" / "data" / "val"))
    space = supernet.space
    for row in card["evaluation"]["inherited"][:2]:
        assert supernet.evaluate(space.resolve(row["subnet"]), val)["AP"] == pytest.approx(row["AP"], abs=1e-4)
    row = card["evaluation"]["other_heads"][1]  # the largest backbone under the query head: `--preset max --head query`
    arch = space.with_head(space.resolve(row["subnet"]), row["head"])
    assert (row["subnet"], row["head"], row["arch_hash"]) == ("max", "query", arch_hash(arch))
    assert supernet.evaluate(arch, val)["AP"] == pytest.approx(row["AP"], abs=1e-4)


def test_damaged_weights_are_refused(tiny_zoo, tmp_path):
    copy = tmp_path / "entry"
    copy.mkdir()
    for p in (tiny_zoo / "entry").iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    data = bytearray((copy / zoo.WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (copy / zoo.WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(PoseNASError, match="SHA-256 does not match"):
        TrainedSupernet.load(copy)


def test_unknown_zoo_name_is_one_line(capsys):
    assert main(["eval-subnet", "--supernet", "zoo:nope", "--arch", "max", "--data", "x"]) == 2
    err = capsys.readouterr().err
    assert "zoo:nope: no such zoo supernet" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # subnets trained alone
def test_the_card_ranks_inherited_against_standalone_training(tiny_zoo, monkeypatch, capsys):
    """The stand-alone half trains on its own (``--standalone-only``; a subnet another process
    trains is left to it) and leaves records that are enough for the card: with the subnets'
    checkpoints deleted, nothing is trained again."""
    from nas.app.zoo import ranking_archs

    monkeypatch.setenv("POSENAS_CACHE", str(tiny_zoo / "cache"))
    config, entry, run = tiny_zoo / "tiny-zoo.yaml", tiny_zoo / "ranked", tiny_zoo / "run"
    held = sorted(ranking_archs(SearchSpace.load("tiny"), 3))[0]
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom nas.io import writer_lock\nwith writer_lock("
                               "sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()",
                               str(run / "ranking" / "standalone" / held / "epochs-1")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    only = ["zoo", "build", str(config), "--out", str(run), "--standalone", "3", "--standalone-only"]
    assert main(only) == 0
    assert f"{held}: trained alone by another process" in capsys.readouterr().out
    assert len(list((run / "ranking" / "standalone").glob("*/epochs-1/result.json"))) == 2
    holder.stdin.close()
    assert holder.wait() == 0
    assert main(only) == 0  # trains the one left
    assert (run / "ranking" / "standalone" / held / "epochs-1" / "result.json").exists()
    folders = sorted((run / "ranking" / "standalone").glob("*/epochs-1"))  # a folder per schedule
    assert len(folders) == 3 and not (run / "ranking" / "subnets").exists()  # no inherited AP: the supernet waits
    trained = {f.parent.name: json.loads((f / "result.json").read_text())["AP"] for f in folders}
    for folder in folders:
        (folder / "checkpoint.pt").unlink()
    assert main(["zoo", "build", str(config), "--out", str(run), "--into", str(entry),
                 "--predictor-samples", "0", "--standalone", "3"]) == 0  # the run resumes: nothing to train
    standalone = zoo.read_card(entry)["standalone"]
    assert standalone["subnets"] == 3 and len(standalone["table"]) == 3 and standalone["epochs"] == 1
    assert {row["subnet"]: row["standalone_AP"] for row in standalone["table"]} == pytest.approx(trained, abs=1e-4)
    assert not any((f / "checkpoint.pt").exists() for f in folders)
    first = standalone["table"][0]  # a record of other weights (a supernet trained on since) is evaluated again
    record = run / "ranking" / "subnets" / f"{first['subnet']}.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "supernet": "older", "inherited_AP": 9.9}))
    assert main(["zoo", "build", str(config), "--out", str(run), "--into", str(entry),
                 "--predictor-samples", "0", "--standalone", "3"]) == 0
    assert zoo.read_card(entry)["standalone"]["table"][0]["inherited_AP"] == pytest.approx(first["inherited_AP"])


@pytest.mark.slow  # a second, short training run
def test_a_run_goes_on_training_a_zoo_entry_and_its_card_names_both_stages(tiny_zoo, tmp_path, monkeypatch):
    from nas.app.zoo import build_entry

    monkeypatch.setenv("POSENAS_CACHE", str(tiny_zoo / "cache"))
    entry = shutil.copytree(tiny_zoo / "entry", tmp_path / "entry")
    config = {**TINY_ZOO, "supernet": {**TINY_ZOO["supernet"], "init": str(entry), "phases": [
        {"name": "largest", "epochs": 0.3, "lr": 1e-30, "warmup_epochs": 0}]}}
    (tmp_path / "continued.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "continued"
    first = zoo.read_card(entry)
    for _ in range(2):  # packed over the entry it started from, twice: the chain still names that entry
        card = build_entry(str(tmp_path / "continued.yaml"), out, entry, predictor_samples=0, standalone=0)
        assert card["training"]["continues"]["sha256"] == first["sha256"] != card["sha256"]
    assert [stage["steps"] for stage in zoo.training_stages(card)] == [first["training"]["steps"], 1]
    start = TrainedSupernet.load(tiny_zoo / "entry").net.state_dict()
    after = TrainedSupernet.load(out / "supernet" / "supernet.pt").net.state_dict()
    learned = [k for k in start if start[k].is_floating_point() and "running" not in k]
    assert all(torch.allclose(start[k], after[k], rtol=0, atol=1e-20) for k in learned)  # steps too small to move
    fresh = TrainedSupernet.load(tiny_zoo / "run" / "supernet" / "supernet.pt").net.state_dict()
    assert not all(fresh[k].equal(after[k]) for k in learned)  # the entry is fp16: not the fp32 checkpoint


def _main_job(tiny_zoo, tmp_path, monkeypatch, target, top: int = 1) -> dict:
    """The main job, small, on the tiny zoo entry, into tmp_path/run."""
    from nas.app.pipeline import run_pipeline

    monkeypatch.setenv("POSENAS_CACHE", str(tiny_zoo / "cache"))
    entry = str(tiny_zoo / "entry")
    config = {"name": "main", "supernet": entry,
              "data": {"train_images": 8, "val_images": 6, "size": [96, 96], "train_seed": 5, "val_seed": 6},
              "latency": {"warmup": 1, "repeats": 5, "target": target},
              "search": {"latency_budget_ms": 1000, "accuracy_predictor": entry, "predicted_trials": 200, "verify": 2,
                         "eval_images": 4},
              "finetune": {"top": top, "epochs": 1, "batch_size": 4, "workers": 0, "augment": False},
              "baselines": ["min", "max"]}
    (tmp_path / "main.yaml").write_text(yaml.safe_dump(config))
    return run_pipeline(str(tmp_path / "main.yaml"), str(tmp_path / "run"))


@pytest.mark.slow  # the whole main job, small
@pytest.mark.parametrize("target", ["onnxruntime/fp32/1", "openvino/int8/1"])
def test_the_main_job_searches_a_zoo_entry_on_predictions(tiny_zoo, tmp_path, monkeypatch, target):
    if target.startswith("openvino"):
        pytest.importorskip("openvino", reason="the openvino package is not installed")
    summary = _main_job(tiny_zoo, tmp_path, monkeypatch, target)
    run = tmp_path / "run"
    assert not (run / "supernet").exists()  # nothing was trained
    adapted = json.loads((run / "latency-predictor.json").read_text())
    adaptation = adapted["settings"]["adaptation"]
    assert adaptation["adapted_from"] and adaptation["anchors"] == 20 and min(adaptation["scales"].values()) >= 0
    pareto = json.loads((run / "search" / "pareto.json").read_text())
    assert pareto["strategy"] == "predicted" and pareto["pareto"]
    assert all({"predicted_AP", "predicted_latency_ms", "AP", "latency_ms"} <= set(p) for p in pareto["pareto"])
    assert len(summary["exports"]) == 1 and Path(summary["pareto_plot"]).exists()
    card = json.loads((Path(summary["exports"][0]) / "card.json").read_text())
    assert card["latency"]["target"] == target and adapted["settings"]["precision"] == target.split("/")[1]
    searched = next(p["latency_ms"] for p in pareto["pareto"] if p["arch_hash"] == card["arch_hash"])
    assert card["latency"]["searched"]["median_ms"] == pytest.approx(searched), "the search's, beside a fresh one"
    verified = pd.read_csv(run / "search" / "verified.csv")
    if target.endswith("int8/1"):  # its AP is the quantized model's, and the export carries that model
        assert verified["inherited_AP"].notna().any() and card["precision"]["file"] == "model.int8.onnx"
    else:
        assert "inherited_AP" not in verified and "precision" not in card


@pytest.mark.slow  # the whole main job, small, searching two targets
def test_a_main_job_that_may_quantize_lets_its_front_pick_the_precision_per_subnet(tiny_zoo, tmp_path, monkeypatch):
    targets = ["onnxruntime/fp32/1", "onnxruntime/int8/1"]
    summary = _main_job(tiny_zoo, tmp_path, monkeypatch, targets, top=2)
    run = tmp_path / "run"
    fronts = {t: json.loads((run / "search" / t.replace("/", "-") / "pareto.json").read_text())["pareto"]
              for t in targets}
    for target in targets:  # each target has its own latency model and search
        adapted = json.loads((run / f"latency-predictor-{target.replace('/', '-')}.json").read_text())
        assert adapted["settings"]["precision"] == target.split("/")[1] and fronts[target]
    merged = json.loads((run / "search" / "pareto.json").read_text())
    assert merged["targets"] == targets
    for point in merged["pareto"]:  # each point is its own target's, with that target's figures
        assert point["arch_hash"] in {p["arch_hash"] for p in fronts[point["target"]]}
        (same,) = [p for p in fronts[point["target"]] if p["arch_hash"] == point["arch_hash"]]
        assert (same["AP"], same["latency_ms"]) == (point["AP"], point["latency_ms"])
    assert set(pd.read_csv(run / "search" / "verified.csv")["target"]) == set(targets)
    ranked = sorted(merged["pareto"], key=lambda p: p["AP"], reverse=True)[:2]
    cards = [json.loads((Path(e) / "card.json").read_text()) for e in summary["exports"]]
    assert [c["latency"]["target"] for c in cards] == [p["target"] for p in ranked]  # exported for its target
    assert all(("precision" in c) == c["latency"]["target"].endswith("int8/1") for c in cards)


@pytest.mark.slow  # three searches on predictions, verified, and every front measured on every target
def test_target_fronts_benchmark_measures_every_front_on_every_target(tiny_zoo, tmp_path, monkeypatch):
    from nas.app.bench import QUICK, bench_target_fronts
    from nas.app.bench_targets import FRONT_TARGETS

    pytest.importorskip("openvino", reason="the openvino package is not installed")
    monkeypatch.setenv("POSENAS_CACHE", str(tiny_zoo / "cache"))
    rows = bench_target_fronts(QUICK, tmp_path, budget_ms=1000, zoo_ref=str(tiny_zoo / "entry"))
    assert len(rows) == len(FRONT_TARGETS) + 2
    table = pd.read_csv(tmp_path / "target-fronts.csv")
    assert set(table["front"]) == set(table["on"]) == set(FRONT_TARGETS)
    assert (table.groupby(["front", "arch_hash"])["on"].nunique() == len(FRONT_TARGETS)).all()
    fp32 = table[table["on"] == "openvino/fp32/1"]  # an fp32 target scores torch's AP
    assert (fp32["AP"] == fp32["fp32_twin_AP"]).all()
    on = {target: rows.set_index(["front", "arch_hash"])["latency_ms"] for target, rows in table.groupby("on")}
    assert (on["onnxruntime/int8/1"] != on["onnxruntime/fp32/1"]).all()  # each target measured apart
    assert (tmp_path / "target-fronts.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # two searches on predictions, verified
def test_deployed_budget_benchmark_sets_both_fronts_side_by_side(tiny_zoo, tmp_path, monkeypatch):
    from nas.app.bench import QUICK, bench_deployed_budget

    monkeypatch.setenv("POSENAS_CACHE", str(tiny_zoo / "cache"))
    rows = bench_deployed_budget(QUICK, tmp_path, budgets_ms=(1000, 2000), zoo_ref=str(tiny_zoo / "entry"))
    table = pd.read_csv(tmp_path / "deployed-budget.csv")
    heads = sorted(set(table["head"]))
    assert len(rows) == 2 * (3 + len(heads)) and set(table["budget_ms"]) == {1000, 2000}
    table = table[table["budget_ms"] == 1000]
    assert set(table["front"]) == {"network", "total"}
    on_both = table.groupby("arch_hash")["front"].nunique() == 2
    assert (table["on_both"] == table["arch_hash"].map(on_both)).all()
    ae = table[table["head"] == "ae"]  # a query head's people come out of its network: nothing runs after it
    assert len(ae) and (ae["total_ms"] > ae["network_ms"]).all(), "post-processing counted end to end"
    network = table[table["front"] == "network"]
    assert rows[0]["value"] == round(float((network["total_ms"] > 1000).mean()), 3) == 0.0
    assert rows[2]["value"] == round(float((network["total_ms"] / network["network_ms"]).median()), 2)
    total = table[table["front"] == "total"]
    for head, row in zip(heads, rows[3:3 + len(heads)]):  # which head the budget picks
        assert head in row["name"] and row["value"] == round(float((total["head"] == head).mean()), 3)


@pytest.mark.slow  # five searches on predictions, verified, with their local search
def test_regret_benchmark_measures_each_seed_against_the_best_any_verified(tiny_zoo, tmp_path, monkeypatch):
    from nas.app.bench import QUICK, bench_regret

    monkeypatch.setenv("POSENAS_CACHE", str(tmp_path / "cache"))  # no evaluations of other tests to refit on
    shutil.copytree(tiny_zoo / "cache", tmp_path / "cache", ignore=shutil.ignore_patterns("evaluations.db*"))
    worst, spread, worst_refitted, _, readapted = bench_regret(QUICK, tmp_path, budgets_ms=(1000, 2000),
                                                               zoo_ref=str(tiny_zoo / "entry"))
    table = pd.read_csv(tmp_path / "regret.csv")
    first, refitted, without = (table[table["search"] == name].reset_index()
                                for name in ("first", "refitted", "first, no local search"))
    assert len(first) == len(refitted) == len(without) == QUICK.regret_seeds and set(table["budget_ms"]) == {1000}
    assert min(first["regret"].min(), refitted["regret"].min()) == 0  # the reference is one of their subnets
    assert (without["regret"] >= first["regret"]).all()  # their first rounds
    assert worst["value"] == round(first["regret"].max(), 4) and spread["unit"] == "AP"
    assert worst_refitted["value"] == round(refitted["regret"].max(), 4)
    anew = table[table["search"] == "seed 0, latency adapted anew"]
    assert len(anew) == QUICK.regret_adaptations and anew["best_AP"].iloc[0] == first["best_AP"].iloc[0]
    assert readapted["value"] == round(anew["best_AP"].max() - anew["best_AP"].min(), 4)
    assert (tmp_path / "regret-latency-1.sqlite").exists()  # measured anew, not from the shared cache
    later = pd.concat([pd.read_csv(tmp_path / f"regret-1000ms-seed{seed}-refitted" / "verified.csv")
                       for seed in range(QUICK.regret_seeds)])
    assert later["evaluation_cached"].any()  # the refitted predictor points at what the first searches evaluated


def test_the_shipped_entry_is_whole_and_meets_its_floors(capsys):
    """zoo:cpu-synth, the main job's supernet: its weights match the card's SHA-256 and load; the
    card records how it was made, in its three stages, and the AP floors it meets (issues 20, 22)."""
    card = zoo.read_card(zoo.locate("zoo:cpu-synth"))
    assert [c["name"] for c in zoo.cards()] == ["cpu-synth"]
    assert card["sha256"] == sha256(zoo.ZOO / "cpu-synth" / zoo.WEIGHTS) and card["size_bytes"] < 10e6
    weights = zoo.load_weights(zoo.ZOO / "cpu-synth", card)
    assert all(v.dtype != torch.float16 for v in weights.values())  # stored fp16, handed out as float32
    stages = zoo.training_stages(card)
    assert [stage["command"].split()[3] for stage in stages] == [
        "nas/app/configs/zoo-cpu-synth.yaml", "nas/app/configs/zoo-cpu-synth-query.yaml",  # the AE head, then both
        "nas/app/configs/zoo-cpu-synth-shrink.yaml"]  # then single-branch subnets drawn more
    assert main(["zoo", "list"]) == 0
    assert f"{sum(stage['steps'] for stage in stages)} steps in 3 stage(s)" in capsys.readouterr().out
    ap = {row["subnet"]: row for row in card["evaluation"]["inherited"]}
    assert ap["max"]["AP"] >= 0.45 and card["evaluation"]["val_images"] == 200
    presets = sorted((r for n, r in ap.items() if n.startswith(("litepose", "higherhrnet"))), key=lambda r: r["macs"])
    assert all(r["AP"] >= 0.20 for r in presets)
    assert [r["AP"] for r in presets] == sorted(r["AP"] for r in presets)  # ranked by MACs
    assert card["standalone"]["subnets"] >= 8 and card["standalone"]["kendall_tau"] >= 0.8
    assert AccuracyPredictor.load("zoo:cpu-synth").info["evaluation"]["supernet"] == card["sha256"]


def test_a_spread_subnet_trained_alone_stays_ranked_when_the_sampler_changes(tmp_path):
    """Its record holds the config: hours of stand-alone training survive a space that now draws
    another spread subnet (it gained dimensions)."""
    from nas.app.zoo import ranking_archs

    space = SearchSpace.load("tiny")
    drawn = ranking_archs(space, len(space.preset_names()) + 1)["spread0"]
    kept = space.resolve("min")  # trained one epoch: a ranking at two epochs trains the same subnet further
    (tmp_path / "spread0" / "epochs-1").mkdir(parents=True)
    (tmp_path / "spread0" / "epochs-1" / "result.json").write_text(json.dumps({"arch_hash": "x", "AP": 0.1,
                                                                                "arch": kept}))
    assert arch_hash(drawn) != arch_hash(kept)
    assert arch_hash(ranking_archs(space, len(space.preset_names()) + 1, tmp_path)["spread0"]) == arch_hash(kept)


def test_the_ranking_counts_each_network_once():
    """cpu's litepose_m and litepose_l resolve to one network: ranked twice, it would be a tie the
    stand-alone training cannot break, and one subnet fewer than the card claims."""
    from nas.app.zoo import ranking_archs

    space = SearchSpace.load("cpu")
    assert arch_hash(space.resolve("litepose_m")) == arch_hash(space.resolve("litepose_l"))
    archs = ranking_archs(space, 8)
    assert len({arch_hash(arch) for arch in archs.values()}) == len(archs) == 8
    assert "litepose_m" in archs and "litepose_l" not in archs
