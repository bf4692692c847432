"""How closely a model in another precision finds the people its fp32 twin finds, on real images:
what an export records of its int8 model (a quantization that moved joints or lost people shows,
whether or not the images have ground truth)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nas.pose.codecs import Codec
from nas.pose.inference import people_from_deployed, prepare
from nas.pose.keypoints import KeypointSpec, person_oks
from nas.subnet.onnx import inference

CHECK_IMAGES = 20  # images an export compares the two models on
SCORE = 0.2  # people the fp32 model is this sure of must be found again
OKS = 0.5  # ... at an object keypoint similarity of at least this (COCO's loosest AP threshold)


def agreement(fp32: bytes, other: bytes, codec: Codec, images: Sequence[np.ndarray], size: int,
              spec: KeypointSpec) -> dict:
    """The share of the fp32 model's people (score >= ``SCORE``) that ``other`` finds at OKS >=
    ``OKS`` (their joints' similarity, as COCO scores a detection) over ``images``, and the mean
    OKS of the closest person it finds for each (1: the same joints)."""
    runs = [inference(model) for model in (fp32, other)]  # both precisions' graphs run in onnxruntime
    found, similarities = 0, []
    for image in images:
        x, matrix = prepare(image, size)
        (reference, scores), (candidates, _) = (people_from_deployed(codec, run(x[None]), matrix, size, spec)
                                                for run in runs)
        for person in reference[scores >= SCORE]:
            visible = person[:, 2] > 0
            span = np.ptp(person[visible, :2], axis=0) if visible.any() else np.zeros(2)
            area = np.array([max(span[0] * span[1], 1.0)])
            best = max((person_oks(c[None, :, :2], person[None, :, :2], visible[None], area, spec)[0]
                        for c in candidates), default=0.0)
            found += int(best >= OKS)
            similarities.append(float(best))
    return {"images": len(images), "people": len(similarities), "found": found,
            "share": found / len(similarities) if similarities else None,
            "mean_oks": float(np.mean(similarities)) if similarities else None, "score_at_least": SCORE,
            "oks_at_least": OKS}
