"""The accuracy predictor: plain-data models that predict what scikit-learn fitted, a resumable
build that reuses a search's trials, and a report on held-out subnets."""
import dataclasses
import json
import math
import random
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from nas.app.cli import main
from nas.pose.dataset import CocoPoseDataset, set_files
from nas.search.accuracy import FITTERS, MLP, TREES, AccuracyPredictor, encode, evaluation_key, predict_model
from nas.search.evaluations import Evaluations
from nas.search.local import PATIENCE, evaluation_seconds, evaluations_that_fit, front_moved
from nas.search.predictor_build import build_accuracy_predictor, prefix_spread
from nas.search.study import run_search
from nas.subnet.inherit import TrainedSupernet
from search_spaces import SearchSpace, arch_hash
from tests.search.test_search import FAST, config, meter


def test_plain_models_predict_what_scikit_learn_fitted():
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    x = rng.random((60, 7))
    y = x @ rng.random(7) + 0.3 * np.sin(5 * x[:, 0])
    grid = rng.random((20, 7))
    trees = GradientBoostingRegressor(**TREES, random_state=0).fit(x, y)
    assert np.allclose(predict_model(FITTERS["trees"](x, y, 0), grid), trees.predict(grid))
    ridge = RidgeCV(alphas=np.logspace(-3, 2, 12)).fit(x, y)
    assert np.allclose(predict_model(FITTERS["ridge"](x, y, 0), grid), ridge.predict(grid))
    mlp = FITTERS["mlp"](x, y, 0)
    reference = MLPRegressor(**MLP, random_state=0).fit(
        (x - np.asarray(mlp["mean"])) / np.asarray(mlp["std"]), y)
    assert np.allclose(predict_model(mlp, grid), reference.predict((grid - np.asarray(mlp["mean"]))
                                                                  / np.asarray(mlp["std"])))


def test_a_choice_never_sampled_does_not_blow_up_the_mlp():
    """One-hot columns constant in the samples (a choice no sampled subnet took) once scaled the
    MLP's input by 1e6 where a searched subnet took that choice: predictions in the hundreds."""
    rng = np.random.default_rng(0)
    x = np.c_[rng.random((40, 5)), np.zeros(40)]
    y = x[:, :5].sum(1) / 5
    novel = np.c_[rng.random((10, 5)), np.ones(10)]
    assert np.abs(predict_model(FITTERS["mlp"](x, y, 0), novel)).max() < 5


def test_encoding_is_one_hot_per_dimension_plus_macs():
    space = SearchSpace.load("tiny")
    x = encode(space, space.max(), 17)
    assert len(x) == sum(len(d.choices) for d in space.dimensions) + 1
    assert x[:-1].sum() == len(space.dimensions) and set(np.unique(x[:-1])) == {0.0, 1.0}
    assert not np.array_equal(x, encode(space, space.min(), 17))


@pytest.mark.slow  # a search, then a build twice
def test_build_reuses_search_trials_resumes_and_reports_held_out(tmp_path, tiny_supernet, synth_small, monkeypatch):
    monkeypatch.setenv("POSENAS_CACHE", str(tmp_path / "cache"))  # only this search's evaluations
    cfg = config(tmp_path, tiny_supernet, synth_small, trials=3, eval_images=4)
    run_search(cfg, meter(tmp_path), progress=False)
    searched = pd.read_csv(tmp_path / "search" / "trials.csv")
    evaluated = set(searched.loc[searched["evaluated"], "arch_hash"])
    calls = []
    original = TrainedSupernet.evaluate
    monkeypatch.setattr(TrainedSupernet, "evaluate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    out = tmp_path / "predictor"
    argv = ["predictor", "build", "--supernet", str(tiny_supernet), "--data", str(synth_small), "--samples", "14",
            "--eval-images", "4", "--calib-images", "8", "--studies", cfg.storage_url, "--out", str(out), "--json"]
    assert main(argv) == 0
    samples = pd.read_csv(out / "samples.csv")
    reused = set(samples.loc[samples["source"] == "study posenas", "arch_hash"])
    assert reused == evaluated and len(evaluated) >= 1
    assert len(calls) == len(samples) - len(reused)  # reused trials were not evaluated again
    report = json.loads((out / "report.json").read_text())
    assert report["model"] in FITTERS and report["held_out"] >= 3
    assert {"kendall_tau", "spearman", "rmse"} <= set(report["held_out_scores"])
    assert (out / "predicted_vs_measured.png").stat().st_size > 0
    # saved as plain data: loaded anew it predicts what the build recorded
    predictor = AccuracyPredictor.load(out / "predictor.json")
    table = pd.read_csv(out / "samples-predicted.csv")
    archs = [json.loads(a) for a in samples["arch"]]
    assert np.allclose(predictor.predict(archs), table["predicted_AP"])
    # a second build evaluates nothing: it resumes from samples.csv; a larger --samples adds the difference
    calls.clear()
    assert main(argv) == 0 and calls == []
    argv[argv.index("--samples") + 1] = "17"
    assert main(argv) == 0 and len(calls) == 3
    assert (pd.read_csv(out / "samples.csv")["source"] == "sampled").sum() == 17


def test_build_fits_on_what_searches_evaluated_and_holds_out_only_spread_subnets(tmp_path, tiny_supernet,
                                                                                  synth_small, monkeypatch):
    """The user's evaluation cache joins the fitting set (searches verified the top, where the
    predictor blurs); held out are spread subnets only, so the figures judge random subnets."""
    monkeypatch.setenv("POSENAS_CACHE", str(tmp_path / "cache"))
    supernet = TrainedSupernet.load(str(tiny_supernet), calibration_images=8)
    key = evaluation_key(supernet, CocoPoseDataset(*set_files(synth_small), supernet.spec), 4, False)
    rng = random.Random(3)
    searched = {arch_hash(a): a for a in (supernet.space.canonical(supernet.space.random(rng)) for _ in range(6))}
    recorded = dict(zip(searched, np.linspace(0.5, 0.9, len(searched))))  # recorded APs the build must take as they are
    for digest, arch in searched.items():
        Evaluations(key).put(arch, {"AP": recorded[digest]})
    build_accuracy_predictor(str(tiny_supernet), set_files(synth_small), tmp_path / "predictor", 10, eval_images=4,
                             calib_images=8, progress=False)
    table = pd.read_csv(tmp_path / "predictor" / "samples-predicted.csv")
    taken = table[table["source"] == "searched"].set_index("arch_hash")["AP"]
    assert set(taken.index) | set(table.loc[table["source"] == "sampled", "arch_hash"]) >= set(searched)
    assert all(taken[h] == recorded[h] for h in taken.index) and len(taken) >= 1
    assert (table["source"] == "sampled").sum() == 10  # the spread samples are counted without them
    assert set(table.loc[table["split"] == "held-out", "source"]) == {"sampled"}
    report = json.loads((tmp_path / "predictor" / "report.json").read_text())
    assert report["fitted_on"] == len(table) - report["held_out"]


def test_worker_processes_evaluate_what_one_process_does(tmp_path, tiny_supernet, synth_small, monkeypatch):
    """--workers N: the same subnets, the same APs, only side by side."""
    monkeypatch.setenv("POSENAS_CACHE", str(tmp_path / "cache"))  # no other test's searched subnets
    tables = []
    for workers in (1, 2):
        build_accuracy_predictor(str(tiny_supernet), set_files(synth_small), tmp_path / str(workers), 10,
                                 eval_images=4, calib_images=8, progress=False, workers=workers)
        tables.append(pd.read_csv(tmp_path / str(workers) / "samples.csv").sort_values("arch_hash", ignore_index=True))
    assert list(tables[0]["arch_hash"]) == list(tables[1]["arch_hash"]) and len(tables[0]) == 10
    assert np.allclose(tables[0]["AP"], tables[1]["AP"], atol=1e-9)


def test_the_evaluation_order_takes_the_middle_then_the_quarters_then_the_eighths():
    for count in (0, 1, 2, 5, 8, 13, 1000):
        assert sorted(prefix_spread(count)) == list(range(count))
    order = prefix_spread(1000)
    assert order[0] == 500 and sorted(order[:3]) == [250, 500, 750]
    assert sorted(order[:7]) == [125 * k for k in range(1, 8)]


def test_an_unfit_predictor_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "predictor.json"
    bad.write_text(json.dumps({"format": "something else"}))
    from nas.errors import PoseNASError
    with pytest.raises(PoseNASError, match="not an accuracy predictor"):
        AccuracyPredictor.load(bad)


def test_search_on_predictions_verifies_its_front_for_real(tmp_path, tiny_zoo, monkeypatch, capsys):
    """The verified front holds real measurements: its latencies are the meter's (the cache holds
    them) and its APs are the supernet's, neither the predicted figures beside them."""
    from nas.latency.predictor import NAMES, LatencyPredictor
    from nas.pose.codecs.ae import CODEC as AE

    monkeypatch.setenv("POSENAS_CACHE", str(tiny_zoo / "cache"))
    entry, val = tiny_zoo / "entry", tiny_zoo / "run" / "data" / "val"
    space = SearchSpace.load("tiny")
    heads = [{**space.min(), "resolution": r, "head": {**space.min()["head"], "multi_resolution": m}}
             for r in space.spec["resolution"] for m in space.spec["head"]["multi_resolution"]]
    # a latency model far from this machine on purpose: 1 ms per pointwise MMAC, 0.5 ms post-processing
    latency = LatencyPredictor([0.0] * len(NAMES), {}, asdict(FAST), postprocess_ms={AE.postprocess_key(a): 0.5
                                                                                   for a in heads})
    latency.coefficients[NAMES.index("macs_pointwise")] = 1.0
    latency.save(tmp_path / "latency.json")
    cfg = config(tmp_path, entry, val, eval_images=4, calib_images=64, predictor=str(tmp_path / "latency.json"),
                 accuracy_predictor=str(entry), predicted_trials=300, verify=2, refine=12)
    lat = meter(tmp_path)
    summary = run_search(cfg, lat, progress=False)
    assert summary["trials"] >= 100 and summary["verified"] >= 1 and 1 <= summary["local"] <= 12
    pareto = json.loads((tmp_path / "search" / "pareto.json").read_text())["pareto"]
    supernet = TrainedSupernet.load(entry)
    data = CocoPoseDataset(*set_files(val))
    for p in pareto:
        assert p["latency_ms"] == lat.measure(p["arch"], 17)["median_ms"] != p["predicted_latency_ms"]
        assert p["AP"] == pytest.approx(supernet.evaluate(p["arch"], data, limit=4)["AP"], abs=1e-9)
    verified = pd.read_csv(tmp_path / "search" / "verified.csv")
    assert verified["latency_measured"].all() and len(verified) == summary["verified"] <= 2 + 12
    local = verified[verified["local"]]
    # rounds of local search go on until PATIENCE of them in a row leave the front where it was (or 12 are done)
    moved = [front_moved(verified[verified["round"] < r], verified[verified["round"] <= r], cfg.latency_budget_ms)
             for r in range(1, verified["round"].max() + 1)]
    assert [False] * PATIENCE not in [moved[i:i + PATIENCE] for i in range(len(moved) - PATIENCE)]
    assert len(local) == 12 or moved[-PATIENCE:] == [False] * PATIENCE
    assert len(local) == summary["local"] and local["number"].min() >= summary["trials"]  # numbered after them
    assert verified["arch_hash"].is_unique and (local["predicted_latency_ms"] <= cfg.latency_budget_ms).all()
    for _, row in local.iterrows():  # evaluated for real, like every verified subnet
        assert row["AP"] == pytest.approx(supernet.evaluate(json.loads(row["arch"]), data, limit=4)["AP"], abs=1e-9)
    # a second search refits the predictor on what the first evaluated, and evaluates none of it again
    second = config(tmp_path, entry, val, eval_images=4, calib_images=64, predictor=str(tmp_path / "latency.json"),
                    accuracy_predictor=str(entry), predicted_trials=100, verify=4, refine=0, seed=2,
                    out=str(tmp_path / "second"))
    run_search(second, lat, progress=False)
    sampled = {arch_hash(a): ap for a, ap in AccuracyPredictor.load(entry).samples}  # known before: not new
    assert verified["known"].any() and verified["known"].equals(verified["arch_hash"].isin(sampled))
    known = verified[verified["known"]]  # verified by their measured latency alone: the AP is the sample's
    assert known["evaluation_cached"].all() and np.array_equal(known["AP"], known["arch_hash"].map(sampled))
    assert f"refitted with {len(set(verified['arch_hash']) - set(sampled))} subnets" in capsys.readouterr().out
    again = pd.read_csv(tmp_path / "second" / "verified.csv").merge(verified, on="arch_hash", suffixes=("", "_first"))
    assert again["evaluation_cached"].all() and np.array_equal(again["AP"], again["AP_first"])
    run_search(dataclasses.replace(second, refit=False, out=str(tmp_path / "third")), lat, progress=False)
    assert "refitted" not in capsys.readouterr().out


def test_the_local_search_stops_when_a_round_does_not_move_the_verified_front():
    verified = pd.DataFrame({"latency_ms": [2.0, 4.0, 5.5], "AP": [0.30, 0.38, 0.40], "feasible": True,
                             "evaluated": True})

    def after(latency: float, ap: float, feasible: bool = True) -> pd.DataFrame:
        return pd.concat([verified, pd.DataFrame({"latency_ms": [latency], "AP": [ap], "feasible": [feasible],
                                                  "evaluated": [True]})], ignore_index=True)

    assert front_moved(verified, after(5.8, 0.405), 6.0)  # a better AP within the budget
    assert not front_moved(verified, after(5.8, 0.401), 6.0)  # by less than STILL_AP, the front barely grows
    assert not front_moved(verified, after(6.5, 0.50, feasible=False), 6.0)  # over budget: no gain
    assert not front_moved(verified, after(4.5, 0.30), 6.0)  # dominated
    assert front_moved(verified, after(1.0, 0.30), 6.0)  # the same AP much faster: the front moved


def test_a_local_round_holds_only_the_evaluations_that_end_within_the_new_budget_time():
    assert evaluations_that_fit(seconds_left=30.0, seconds_per_evaluation=7.0) == 4  # 28 s of 30
    assert evaluations_that_fit(seconds_left=27.0, seconds_per_evaluation=7.0) == 3  # a shorter last round
    assert evaluations_that_fit(seconds_left=6.0, seconds_per_evaluation=7.0) == 0  # none: the search ends
    assert evaluations_that_fit(seconds_left=-2.0, seconds_per_evaluation=7.0) == 0
    assert evaluations_that_fit(seconds_left=math.inf, seconds_per_evaluation=0.0) == 4  # no limit, cached


def test_a_local_round_is_timed_by_its_parents_evaluations_not_by_fast_or_cached_ones():
    """Recorded from a 12 ms search: fast band winners and two cached evaluations put the median at
    8 s, while mutations of the best subnets near the budget took 10-16 s each."""
    verified = pd.DataFrame({"trial_s": [2.9, 5.3, 8.0, 9.7, 0.0, 0.0, 10.6, 16.4],
                             "AP": [0.30, 0.37, 0.40, 0.42, 0.44, 0.45, 0.46, 0.47],
                             "evaluation_cached": [False, False, False, False, True, True, False, False],
                             "feasible": True, "evaluated": True})
    assert evaluation_seconds(verified) == 16.4  # the slowest of the 4 best evaluated ones
    assert evaluations_that_fit(40.0, evaluation_seconds(verified)) == 2  # the median's 8 s: a whole round
    assert evaluation_seconds(verified.assign(AP=verified["AP"][::-1].to_numpy())) == 9.7  # the best are the fast ones
    cached = verified.assign(evaluation_cached=True)
    assert evaluation_seconds(cached) == 16.4  # nothing evaluated here: any verified subnet's
    infeasible = pd.DataFrame({"trial_s": [1.0, 3.0], "AP": 0.0, "feasible": False, "evaluated": False})
    assert evaluation_seconds(infeasible) == 3.0  # no evaluation at all (no evaluation_cached column)


def test_verification_reaches_the_budget_past_a_predicted_plateau():
    """A predictor flat from 2 ms on ends the predicted front at 2 ms; the subnets verified are the
    best predicted in each latency band, so the ones near the budget are measured too."""
    from nas.search.predicted import candidates
    from nas.search.results import pareto_front

    latency = np.linspace(1.0, 6.0, 51)
    table = pd.DataFrame({"latency_ms": np.append(latency, 7.0), "AP": np.append(np.minimum(latency, 2.0) / 10, 0.5),
                          "feasible": np.append(latency <= 6.0, False), "evaluated": True})
    assert pareto_front(table)["latency_ms"].max() == 2.0
    chosen = candidates(table, 5)
    assert len(chosen) == 5 and chosen["latency_ms"].is_monotonic_increasing
    assert chosen["latency_ms"].max() >= 5.0 and chosen["feasible"].all()  # in the last band, never over budget
    assert chosen["AP"].max() == table.loc[table["feasible"], "AP"].max()


def test_a_refit_learns_what_searches_verified_and_the_file_keeps_its_samples(tmp_path):
    """Fitted on 40 random subnets of a made-up AP, the predictor is off on a region it never saw;
    refitted with evaluations there, it predicts them; saved and loaded, it refits alike."""
    space = SearchSpace.load("tiny")
    rng = np.random.default_rng(0)
    archs = [space.canonical(space.random(int(seed))) for seed in rng.integers(0, 10 ** 6, 40)]
    made_up = [0.1 + 0.3 * (a["resolution"] == 96) for a in archs]
    predictor = AccuracyPredictor.fit(space, 17, archs, made_up, "trees", {"evaluation": {"supernet": "x"}})
    verified = [space.canonical(space.mutate(a, 1, prob=0.3)) for a in archs[:8]]
    real = [0.9] * len(verified)  # far above anything fitted on
    assert np.abs(predictor.predict(verified) - 0.9).min() > 0.3
    refitted = predictor.refit(verified, real)
    assert np.abs(refitted.predict(verified) - 0.9).max() < 0.2
    assert refitted.info["refitted_with"] == len({json.dumps(v, sort_keys=True) for v in verified} -
                                                 {json.dumps(a, sort_keys=True) for a in archs})
    predictor.save(tmp_path / "predictor.json")
    loaded = AccuracyPredictor.load(tmp_path / "predictor.json")
    assert loaded.samples == predictor.samples and np.allclose(loaded.predict(verified), predictor.predict(verified))
    assert np.allclose(loaded.refit(verified, real).predict(archs), refitted.predict(archs))


def test_a_predictor_file_with_a_damaged_sample_is_one_line(tmp_path):
    space = SearchSpace.load("tiny")
    AccuracyPredictor.fit(space, 17, [space.min(), space.max()] * 3, [0.1, 0.5] * 3, "ridge", {}).save(
        tmp_path / "predictor.json")
    d = json.loads((tmp_path / "predictor.json").read_text())
    d["samples"][1]["values"][0] = 12345
    (tmp_path / "predictor.json").write_text(json.dumps(d))
    from nas.errors import PoseNASError
    with pytest.raises(PoseNASError, match=r"predictor.json \(samples\[1\]\).*12345"):
        AccuracyPredictor.load(tmp_path / "predictor.json")


def test_ranking_is_judged_among_the_top_third_too():
    """A model that ranks all subnets right by their coarse level but the best ones backwards has a
    high tau overall and a negative one in the top third: the choice of model sees both."""
    from nas.search.accuracy import ranking, scores

    measured = np.linspace(0.0, 0.6, 30)
    predicted = np.where(measured >= 0.4, 1.0 - measured, measured)  # the top third reversed, placed above the rest
    figures = scores(predicted, measured)
    assert figures["kendall_tau"] > 0.5 and figures["top_third_kendall_tau"] == pytest.approx(-1.0)
    assert ranking(figures) < ranking(scores(measured + 0.01, measured)) == pytest.approx(1.0)
    assert figures["mae"] == pytest.approx(np.mean(np.abs(predicted - measured)))


def test_near_front_samples_mutate_the_subnets_no_other_beats_on_macs_and_ap():
    from nas.search.predictor_build import near_front, on_front
    from search_spaces import arch_hash
    from supernet.cost import arch_cost

    space = SearchSpace.load("tiny")
    archs = [space.canonical(space.random(seed)) for seed in range(30)]
    macs = np.array([arch_cost(a, 17).macs for a in archs])
    aps = np.log(macs) - np.log(macs).min() + np.random.default_rng(0).normal(0, 0.3, 30)
    front = on_front(archs, aps, 17)
    for i in range(30):  # on the front exactly when nothing cheaper (or as cheap) has a higher AP
        assert (i in front) == (not any(macs[j] <= macs[i] and aps[j] >= aps[i] and j != i
                                        and (macs[j], -aps[j]) < (macs[i], -aps[i]) for j in range(30)))
    done = {arch_hash(a) for a in archs}
    new = near_front(space, archs, aps, 17, 12, random.Random(0), done)
    assert len(new) == 12 and not done & {arch_hash(a) for a in new}
    for child in new:  # one mutation from a front subnet: nearer it than to any other subnet
        distance = [sum(x != y for x, y in zip(space.values(child), space.values(a))) for a in archs]
        assert min(distance[i] for i in front) == min(distance)
