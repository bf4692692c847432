"""Dataset summaries and the oracle: ground truth encoded into targets and decoded back.

The oracle's AP is the ceiling that heatmap resolution, NMS and grouping leave to any network.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from nas.pose.codecs.ae import CODEC as AE  # the oracle encodes ground truth as the AE head's maps
from nas.pose.dataset import CocoPoseDataset
from nas.pose.decode import DecodeConfig
from nas.pose.evaluate import evaluate
from nas.pose.inference import decode_batch, to_coco_results
from nas.pose.targets import oracle_outputs
from nas.pose.transforms import letterbox_matrix, warp_keypoints

SCALE_BINS = (0, 32, 64, 96, 128, 256, float("inf"))  # sqrt(area) in pixels; COCO's M/L split at 32 and 96


def summarize(ds: CocoPoseDataset) -> dict:
    anns = [a for a in ds.coco.dataset["annotations"] if a["category_id"] == ds.category_id]
    people = [a for a in anns if not a["iscrowd"] and a["num_keypoints"] > 0]
    kps = np.array([a["keypoints"] for a in people], dtype=np.float64).reshape(len(people), -1, 3)
    sides = np.sqrt([a["area"] for a in people])
    hist, _ = np.histogram(sides, bins=SCALE_BINS)
    labels = [f"{int(lo)}-{int(hi)}" if hi != float("inf") else f"{int(lo)}+" for lo, hi in zip(SCALE_BINS, SCALE_BINS[1:])]
    per_image = np.bincount([ds.image_ids.index(a["image_id"]) for a in people], minlength=len(ds))
    return {
        "spec": ds.spec.name,
        "images": len(ds),
        "people": len(people),
        "crowd_regions": sum(1 for a in anns if a["iscrowd"]),
        "unlabeled_people": sum(1 for a in anns if not a["iscrowd"] and a["num_keypoints"] == 0),
        "people_per_image_max": int(per_image.max()),
        "keypoints_labeled": int((kps[..., 2] > 0).sum()),
        "keypoints_visible": int((kps[..., 2] == 2).sum()),
        "scale_histogram": dict(zip(labels, hist.tolist())),
    }


def oracle_ap(ds: CocoPoseDataset, size: int, strides: tuple[int, ...] = (4, 2),
              cfg: DecodeConfig = DecodeConfig(), progress: bool = False) -> dict[str, float]:
    results = []
    for image_id in tqdm(ds.image_ids, desc=f"oracle@{size}", disable=not progress):
        info = ds.coco.imgs[image_id]
        m = letterbox_matrix(info["width"], info["height"], size)
        kps, _ = ds.people(image_id)
        outs = oracle_outputs(warp_keypoints(kps, m, size), size, ds.spec.num_keypoints, strides)
        (people, scores), = decode_batch(AE, outs, [m], size, ds.spec, cfg)
        results += to_coco_results(image_id, people, scores)
    return evaluate(ds.coco, results, ds.spec)
