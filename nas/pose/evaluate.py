"""COCO keypoint AP through pycocotools' COCOeval, with the dataset spec's OKS sigmas: of a results
file, or of a network run on a dataset's images."""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from nas.errors import PoseNASError
from nas.io import read_json
from nas.pose.dataset import CocoPoseDataset, quiet_coco
from nas.pose.groundtruth import is_id, is_number
from nas.pose.inference import detect, people_from_deployed, prepare, to_coco_results
from nas.pose.keypoints import KeypointSpec

METRICS = ("AP", "AP50", "AP75", "APM", "APL", "AR")
CROWD_LEVELS = {"AP_easy": (0.0, 0.1), "AP_medium": (0.1, 0.8), "AP_hard": (0.8, 1.01)}  # CrowdPose's split


def check_results(results: object, gt: COCO, spec: KeypointSpec, source: str) -> list[dict]:
    """Reject results that do not belong to this ground truth, or that COCOeval would misjudge (a
    NaN OKS counts as a match: all-NaN keypoints would score AP 1.0), with one line naming the
    culprit."""
    if not isinstance(results, list):
        raise PoseNASError(f"{source}: expected a JSON list of COCO keypoint results")
    k = spec.num_keypoints
    person = next((c["id"] for c in gt.cats.values() if c.get("keypoints")), 1)
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "keypoints", "score"} <= r.keys():
            raise PoseNASError(f"{source}: result #{i} lacks 'image_id', 'keypoints' or 'score'")
        if not is_id(r["image_id"]) or r["image_id"] not in gt.imgs:
            raise PoseNASError(f"{source}: result #{i} has image_id {r['image_id']!r} that is not in the ground truth")
        if not isinstance(r["keypoints"], list) or len(r["keypoints"]) != 3 * k:
            n = len(r["keypoints"]) if isinstance(r["keypoints"], list) else "no"
            raise PoseNASError(f"{source}: result #{i} has {n} keypoint values, expected {3 * k} "
                               f"(spec {spec.name!r}); is it a results file for another dataset?")
        if not all(map(is_number, r["keypoints"])) or not is_number(r["score"]):
            raise PoseNASError(f"{source}: result #{i} (image {r['image_id']}) has a non-numeric, NaN or infinite "
                               f"keypoint value or score")
        if r.setdefault("category_id", person) != person:
            raise PoseNASError(f"{source}: result #{i} has category_id {r['category_id']!r}; the people are "
                               f"category {person}")
    return results


def _stat(value: float) -> float:
    """COCOeval writes -1 where no ground truth falls in a range; that is 'undefined', not 0."""
    return float(value) if value >= 0 else math.nan


def _run(gt: COCO, results: list[dict], spec: KeypointSpec, image_ids: list[int] | None = None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = spec.sigmas_array
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _without_results(gt: COCO) -> dict[str, float]:
    """What COCOeval would say of no results (pycocotools cannot load none): 0 where there are
    people to find, undefined where there are none (APM, APL by COCO's area ranges)."""
    areas = np.array([a["area"] for a in gt.dataset["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]])
    ranges = {"APM": (32 ** 2, 96 ** 2), "APL": (96 ** 2, math.inf)}
    metrics = {}
    for m in METRICS:
        lo, hi = ranges.get(m, (0, math.inf))
        metrics[m] = 0.0 if ((areas >= lo) & (areas < hi)).any() else math.nan
    return metrics


def evaluate(gt: COCO, results: list[dict], spec: KeypointSpec) -> dict[str, float]:
    """AP, AP50, AP75, APM, APL, AR; plus AP easy/medium/hard when images carry ``crowdIndex``."""
    if not results:
        metrics = _without_results(gt)
    else:
        stats = _run(gt, results, spec)
        metrics = {m: _stat(stats[i]) for m, i in zip(METRICS, range(6))}
    crowd = {i: img["crowdIndex"] for i, img in gt.imgs.items() if "crowdIndex" in img}
    if crowd:
        for name, (lo, hi) in CROWD_LEVELS.items():
            ids = [i for i, c in crowd.items() if lo <= c < hi]
            has_people = any(a["num_keypoints"] > 0 for a in gt.loadAnns(gt.getAnnIds(imgIds=ids)))
            if not ids or not has_people or not results:
                metrics[name] = 0.0 if (ids and has_people) else math.nan
            else:
                metrics[name] = _stat(_run(gt, results, spec, ids)[0])
    return metrics


def load_results(path: str | Path, gt: COCO, spec: KeypointSpec) -> list[dict]:
    return check_results(read_json(path, "results file"), gt, spec, str(path))


def format_metrics(metrics: dict[str, float | None]) -> str:
    """One line of metrics; those COCOeval leaves undefined (NaN, or None once stored) say so."""
    return "  ".join(f"{k} {'undefined' if v is None or math.isnan(v) else f'{v:.4f}'}" for k, v in metrics.items())


def metrics_json(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: undefined figures become null."""
    return {k: (None if math.isnan(v) else round(v, 6)) for k, v in metrics.items()}


def evaluate_network(net: torch.nn.Module, ds: CocoPoseDataset, size: int, flip_test: bool = False,
                     limit: int | None = None, batch: int = 8, device: torch.device | str = "cpu",
                     progress: bool = False, refine=None) -> tuple[dict[str, float], list[dict]]:
    """COCO AP of a network on (the first ``limit`` images of) a dataset; ``refine``: a skeleton
    completer (``nas.pose.completion.Completion``) after the decoding."""
    ids = ds.image_ids[:limit] if limit else ds.image_ids
    net.eval()
    results = []
    for start in tqdm(range(0, len(ids), batch), desc="eval", disable=not progress, leave=False):
        chunk = ids[start:start + batch]
        people = detect(net, [ds.load_image(i) for i in chunk], size, ds.spec, flip_test, device=device,
                        refine=refine)
        for image_id, (kps, scores) in zip(chunk, people):
            results += to_coco_results(image_id, kps, scores)
    return evaluate(ground_truth(ds, ids if limit else None), results, ds.spec), results


def evaluate_deployed(run, codec, ds: CocoPoseDataset, size: int, limit: int | None = None, progress: bool = False,
                      refine=None) -> tuple[dict[str, float], list[dict]]:
    """COCO AP of a deployed model (``run``: a letterboxed (1, 3, size, size) input -> its outputs,
    in the runtime that deploys it), each image decoded by the step after its graph."""
    ids = ds.image_ids[:limit] if limit else ds.image_ids
    results = []
    for image_id in tqdm(ids, desc="eval", disable=not progress, leave=False):
        x, matrix = prepare(ds.load_image(image_id), size)
        kps, scores = people_from_deployed(codec, run(x[None]), matrix, size, ds.spec, refine=refine)
        results += to_coco_results(image_id, kps, scores)
    return evaluate(ground_truth(ds, ids if limit else None), results, ds.spec), results


def ground_truth(ds: CocoPoseDataset, ids: list[int] | None):
    """The dataset's ground truth, or that of the images ``ids`` only."""
    if ids is None:
        return ds.coco
    keep = set(ids)
    return quiet_coco({**ds.coco.dataset, "images": [i for i in ds.coco.dataset["images"] if i["id"] in keep],
                       "annotations": [a for a in ds.coco.dataset["annotations"] if a["image_id"] in keep]})
