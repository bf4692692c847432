"""`posenas predictor build`: evaluate subnets spread over the space, fit the accuracy predictor,
and judge it on held-out subnets.

Every evaluation is one inherited subnet, BN recalibrated, on the same images a search scores it
on; rows are written as they come (``samples.csv``), so a killed build resumes. ``samples``
subnets spread over MACs (a larger count extends a build), then ``near_front`` mutations of the
subnets on the AP-MACs front, and every subnet searches of the same supernet on the same data
verified (the user's evaluation cache, and ``studies``): a search looks at the top, so the
predictor must rank well there, not only on average. Only spread subnets are held out to judge it:
the others crowd the top.
"""
from __future__ import annotations

import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
from tqdm import tqdm

from nas.errors import PoseNASError
from nas.io import read_json, write_json, write_text
from nas.plots import predicted_against_measured
from nas.pose.dataset import CocoPoseDataset
from nas.search.accuracy import AccuracyPredictor, choose_model, encode, evaluation_key, scores
from nas.search.evaluations import Evaluations, scored
from nas.subnet.inherit import TrainedSupernet
from search_spaces import SearchSpace, arch_hash
from search_spaces.space import head_type
from supernet.cost import arch_cost

SAMPLES, EVALUATION, PREDICTOR, REPORT = "samples.csv", "evaluation.json", "predictor.json", "report.json"
PLOT = "predicted_vs_measured.png"


def spread_subnets(space: SearchSpace, count: int, seed: int = 0) -> list[dict]:
    """``count`` random subnets whose MACs sit at evenly spaced quantiles of 400 random draws."""
    rng = random.Random(seed)
    pool = sorted((space.canonical(space.random(rng)) for _ in range(max(400, 4 * count))),
                  key=lambda a: arch_cost(a).macs)
    return [pool[int((i + 0.5) * len(pool) / count)] for i in range(count)]


def prefix_spread(count: int) -> list[int]:
    """0 .. count - 1 in van der Corput order (the middle, then the quarters, ...): every prefix of
    a MACs-sorted list taken in this order spreads over the whole range."""
    def radical_inverse(i: int) -> float:
        out, unit = 0.0, 0.5
        while i:
            out, i, unit = out + unit * (i & 1), i >> 1, unit / 2
        return out

    steps = 2 ** max(count - 1, 0).bit_length()  # at least count: the fractions j / steps reach every index
    return list(dict.fromkeys(int(radical_inverse(j) * count) for j in [*range(1, steps), 0])) if count else []


NEAR_FRONT_ROUND = 32  # near-front subnets drawn from one front: the next round mutates the front it moved
SPREAD, NEAR_FRONT, SEARCHED = "sampled", "near front", "searched"  # rows' sources (and "study NAME")


def on_front(archs: list[dict], aps: np.ndarray, k: int) -> list[int]:
    """Indices of the subnets no other beats on both fewer MACs and a higher AP, fewest MACs first."""
    macs = np.array([arch_cost(a, k).macs for a in archs])
    front, best = [], -np.inf
    for i in np.lexsort((-aps, macs)):
        if aps[i] > best:
            front.append(int(i))
            best = aps[i]
    return front


def near_front(space: SearchSpace, archs: list[dict], aps: np.ndarray, k: int, count: int, rng: random.Random,
               done: set[str]) -> list[dict]:
    """``count`` new mutations of the front's subnets (``on_front``), its parents taken in turn."""
    parents = [archs[i] for i in on_front(archs, aps, k)]
    out: dict[str, dict] = {}
    for attempt in range(100 * count):
        if len(out) == count:
            break
        child = space.canonical(space.mutate(parents[attempt % len(parents)], rng))
        if arch_hash(child) not in done:
            out[arch_hash(child)] = child
    return list(out.values())


def study_rows(storages: list[str], key: dict) -> list[dict]:
    """Evaluated trials of every study in ``storages`` whose evaluation matches ``key``."""
    rows = []
    for url in storages:
        try:
            summaries = optuna.get_all_study_summaries(url, include_best_trial=False)
        except Exception as e:  # noqa: BLE001 - any unusable storage is the same user error
            raise PoseNASError(f"--studies {url}: not a readable Optuna storage ({type(e).__name__})") from None
        for summary in summaries:
            if summary.user_attrs.get("evaluation") != key:
                continue
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                if t.user_attrs.get("evaluated") and "metric_AP" in t.user_attrs:
                    rows.append({"arch_hash": t.user_attrs["arch_hash"], "AP": t.user_attrs["metric_AP"],
                                 "arch": t.user_attrs["arch"], "source": f"study {summary.study_name}"})
    return rows


def searched_rows(space: SearchSpace, key: dict) -> list[dict]:
    """The subnets the user's searches evaluated for ``key`` (``nas.search.evaluations``)."""
    return [sample_row(arch, ap, SEARCHED) for arch, ap in zip(*Evaluations(key).all(space))]


def sample_row(arch: dict, ap: float, source: str) -> dict:
    """A row of ``samples.csv``: the subnet, its AP as a search scores it, where it came from."""
    return {"arch_hash": arch_hash(arch), "AP": scored(ap), "arch": json.dumps(arch, separators=(",", ":")),
            "source": source}


def build_accuracy_predictor(supernet_ref: str, val: tuple[str, str], out: str | Path, samples: int = 200,
                             eval_images: int | None = 100, calib_images: int = 64, flip_test: bool = False,
                             studies: list[str] = (), holdout: float = 0.2, seed: int = 0,
                             progress: bool = True, workers: int = 1, near_front_samples: int = 0) -> dict:
    out = Path(out)
    supernet = TrainedSupernet.load(supernet_ref, calibration_images=calib_images)
    space, k = supernet.space, supernet.num_keypoints
    key = evaluation_key(supernet, CocoPoseDataset(*val, supernet.spec), eval_images, flip_test)
    if (out / EVALUATION).exists() and read_json(out / EVALUATION) != key:
        raise PoseNASError(f"{out}: its samples were evaluated for another supernet or data; use a new --out")
    write_json(out / EVALUATION, key, indent=1)
    rows = pd.read_csv(out / SAMPLES).to_dict("records") if (out / SAMPLES).exists() else []
    done = {r["arch_hash"] for r in rows}
    for r in study_rows(list(studies), key) + searched_rows(space, key):
        if r["arch_hash"] not in done:
            rows.append(r)
            done.add(r["arch_hash"])
    spread = spread_subnets(space, samples, seed)
    wanted = [space.resolve(p) for p in space.preset_names()] + [spread[i] for i in prefix_spread(len(spread))]
    todo = list({arch_hash(a): a for a in wanted if arch_hash(a) not in done}.values())
    spread_rows = sum(r["source"] == SPREAD for r in rows)
    todo = todo[:max(0, samples - spread_rows)]  # what is evaluated counts: a larger --samples extends a build
    evaluate = partial(evaluated, supernet_ref, supernet, val=val, flip_test=flip_test, eval_images=eval_images,
                       calib_images=calib_images, workers=workers)
    with tqdm(total=len(todo), desc="evaluating subnets", disable=not progress) as bar:
        record(rows, evaluate(todo), SPREAD, out, bar)
    rng = random.Random(seed)
    left = near_front_samples - sum(r["source"] == NEAR_FRONT for r in rows)
    with tqdm(total=max(left, 0), desc="evaluating subnets near the front", disable=not progress) as bar:
        while left > 0:
            archs = [json.loads(r["arch"]) for r in rows]
            todo = near_front(space, archs, np.array([r["AP"] for r in rows]), k, min(NEAR_FRONT_ROUND, left), rng,
                              {r["arch_hash"] for r in rows})
            if not todo:
                break
            record(rows, evaluate(todo), NEAR_FRONT, out, bar)
            left -= len(todo)
    if len(rows) < 10:
        raise PoseNASError(f"--samples {samples}: at least 10 evaluated subnets are needed to fit and judge a "
                           f"predictor, have {len(rows)}")
    return fit_and_report(space, k, pd.DataFrame(rows), key, out, holdout, seed)


def record(rows: list[dict], evaluations, source: str, out: Path, bar: tqdm) -> None:
    """Each (arch, AP) added to ``rows`` and ``samples.csv`` as it comes, so a killed build resumes."""
    for arch, ap in evaluations:
        rows.append(sample_row(arch, ap, source))
        write_text(out / SAMPLES, pd.DataFrame(rows).to_csv(index=False))
        bar.update()


def evaluated(supernet_ref: str, supernet: TrainedSupernet, archs: list[dict], val: tuple[str, str],
              flip_test: bool, eval_images: int | None, calib_images: int, workers: int):
    """(arch, inherited AP) of each of ``archs``, as they finish: here, or in ``workers`` processes
    of one thread each (small subnets use cores better side by side than split across threads)."""
    if workers <= 1:
        dataset = CocoPoseDataset(*val, supernet.spec)
        for arch in archs:
            yield arch, supernet.evaluate(arch, dataset, flip_test, eval_images)["AP"]
        return
    supernet.calibration  # its images made here once, not raced for by the workers
    context = multiprocessing.get_context("spawn")  # torch's thread pools do not survive a fork
    pool = ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(supernet_ref, val, calib_images))
    try:
        jobs = {pool.submit(_evaluate_in_worker, arch, flip_test, eval_images): arch for arch in archs}
        for job in as_completed(jobs):
            yield jobs[job], job.result()
    finally:  # stopped early (interrupted, a failure): the subnets not begun are dropped, not waited for
        pool.shutdown(cancel_futures=True)


_worker: dict = {}  # a worker process's supernet and dataset, loaded once


def _start_worker(supernet_ref: str, val: tuple[str, str], calib_images: int) -> None:
    torch.set_num_threads(1)
    supernet = TrainedSupernet.load(supernet_ref, calibration_images=calib_images)
    _worker.update(supernet=supernet, dataset=CocoPoseDataset(*val, supernet.spec))


def _evaluate_in_worker(arch: dict, flip_test: bool, eval_images: int | None) -> float:
    return _worker["supernet"].evaluate(arch, _worker["dataset"], flip_test, eval_images)["AP"]


def fit_and_report(space: SearchSpace, k: int, table: pd.DataFrame, key: dict, out: Path, holdout: float,
                   seed: int) -> dict:
    """Choose a model by cross-validation on the fitting split, judge it on the held-out split: a
    share of the subnets spread over the space (the near-front and searched ones are all fitted on)."""
    archs = [json.loads(a) for a in table["arch"]]
    y = table["AP"].to_numpy(dtype=float)
    spread = np.flatnonzero(table["source"].to_numpy() == SPREAD)
    order = np.random.default_rng(seed).permutation(spread)
    test = np.sort(order[:max(3, int(len(spread) * holdout))])
    fit = np.setdiff1d(np.arange(len(archs)), test)
    x = np.stack([encode(space, a, k) for a in archs])
    heads = np.array([head_type(a) for a in archs])
    kind, cv = choose_model(x[fit], y[fit], seed)
    predictor = AccuracyPredictor.fit(space, k, [archs[i] for i in fit], y[fit], kind, {}, seed)
    predicted = predictor.predict(archs)
    report = {"model": kind, "subnets": len(archs), "fitted_on": len(fit), "held_out": len(test),
              "held_out_scores": scores(predicted[test], y[test]),
              "held_out_by_head": {head: scores(predicted[test][heads[test] == head], y[test][heads[test] == head])
                                   for head in sorted(set(heads[test]))}, "cross_validation": cv,
              "ap_range": [float(y.min()), float(y.max())], "evaluation": key}
    predictor.info = {"evaluation": key, "report": report}
    predictor.save(out / PREDICTOR)
    write_json(out / REPORT, report, indent=1)
    table = table.assign(predicted_AP=predicted, split=["held-out" if i in set(test.tolist()) else "fit"
                                                        for i in range(len(archs))])
    write_text(out / SAMPLES.replace(".csv", "-predicted.csv"), table.drop(columns="arch").to_csv(index=False))
    held = report["held_out_scores"]
    predicted_against_measured(table, "AP", "predicted_AP", out / PLOT, "measured AP (inherited, BN recalibrated)",
                               f"predicted AP ({report['model']})",
                               f"held-out: Kendall tau {held['kendall_tau'] or 0:.2f}, Spearman "
                               f"{held['spearman'] or 0:.2f}, RMSE {held['rmse']:.3f}")
    return report
