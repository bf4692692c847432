"""Run a pose network on whole images and turn its outputs into COCO keypoint results."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from nas.pose.completion import Completion
from nas.pose.decode import DecodeConfig, aggregate, group, group_candidates
from nas.pose.keypoints import KeypointSpec
from nas.pose.transforms import apply_to_points, invert, letterbox_matrix, normalize, warp_image

Network = Callable[[torch.Tensor], list[torch.Tensor]]
QUERY_STRIDE = 4  # the query head works on the stride-4 features


def prepare(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Letterboxed, normalised (3, size, size) input and the image-to-input matrix."""
    h, w = image.shape[:2]
    m = letterbox_matrix(w, h, size)
    return normalize(warp_image(image, m, size)), m


def decode_batch(outputs: list[torch.Tensor], matrices: Sequence[np.ndarray], size: int, spec: KeypointSpec,
                 cfg: DecodeConfig = DecodeConfig(), flipped: list[torch.Tensor] | None = None,
                 refine: Completion | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """People per image from a batch of network outputs: keypoints (P, K, 3) in original image
    pixels (``matrices`` map each image into the input) and a score per person (P,). A query
    head's people (``is_people``) need no grouping; flip test does not apply to them. ``refine``:
    a skeleton completer moves the joints scoring under ``cfg.missing_below``."""
    if is_people(outputs, spec.num_keypoints):
        people = [query_people(p, m, cfg) for p, m in zip(outputs[0].detach().float().cpu().numpy(), matrices)]
        return [completed(kps, scores, refine, cfg) for kps, scores in people]
    heat, tags = aggregate([o.detach().float().cpu() for o in outputs], spec.num_keypoints,
                           [o.detach().float().cpu() for o in flipped] if flipped else None, spec.flip_index)
    stride = size / heat.shape[-1]
    people = []
    for i, matrix in enumerate(matrices):
        kps, scores = group(heat[i], tags[i], spec, int(round(stride)), cfg)
        kps[..., :2] = apply_to_points(invert(matrix), (kps[..., :2] + 0.5) * stride - 0.5)
        people.append(completed(kps, scores, refine, cfg))
    return people


def completed(kps: np.ndarray, scores: np.ndarray, refine: Completion | None, cfg: DecodeConfig
              ) -> tuple[np.ndarray, np.ndarray]:
    """One image's people, their missing joints completed where a completer is given."""
    return (kps if refine is None else refine.refine(kps, cfg.missing_below)), scores


def is_people(outputs: Sequence, num_keypoints: int) -> bool:
    """Whether network outputs are a query head's people (B, Q, K + 1, 3), not square maps."""
    return len(outputs) == 1 and len(outputs[0].shape) == 4 and tuple(outputs[0].shape[-2:]) == (num_keypoints + 1, 3)


def query_people(people: np.ndarray, matrix: np.ndarray, cfg: DecodeConfig = DecodeConfig()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """People of one image from a query head's (Q, K + 1, 3) at stride 4: those scoring at least
    ``cfg.person_threshold``, best first, in original image pixels."""
    scores = people[:, -1, 2]
    keep = np.argsort(-scores)[:cfg.max_people]
    keep = keep[scores[keep] >= cfg.person_threshold]
    kps = people[keep, :-1].copy()
    kps[..., :2] = apply_to_points(invert(matrix), (kps[..., :2] + 0.5) * QUERY_STRIDE - 0.5)
    return kps, scores[keep]


def people_from_candidates(outputs: Sequence[np.ndarray], matrix: np.ndarray, size: int, spec: KeypointSpec,
                           cfg: DecodeConfig = DecodeConfig(), refine: Completion | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """People of one image from a deployed model's outputs (heatmaps, tags, candidates, candidate
    tags: ``nas.subnet.onnx.OUTPUTS``): the grouping that runs outside the graph; or a query head's
    people, which need none."""
    if is_people(outputs, spec.num_keypoints):
        return completed(*query_people(np.asarray(outputs[0])[0], matrix, cfg), refine, cfg)
    heat, tags, joints, joint_tags = (np.asarray(o)[0] for o in outputs)
    stride = size / heat.shape[-1]
    kps, scores = group_candidates(torch.from_numpy(heat), torch.from_numpy(tags)[..., None], joints,
                                   joint_tags[..., None], spec, int(round(stride)), cfg)
    kps[..., :2] = apply_to_points(invert(matrix), (kps[..., :2] + 0.5) * stride - 0.5)
    return completed(kps, scores, refine, cfg)


@torch.no_grad()
def detect(net: Network, images: Sequence[np.ndarray], size: int, spec: KeypointSpec,
           flip_test: bool = False, cfg: DecodeConfig = DecodeConfig(),
           device: torch.device | str = "cpu", refine: Completion | None = None
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Letterbox each image to ``size``, run the network (and its mirror with flip test), decode."""
    prepared = [prepare(img, size) for img in images]
    x = torch.from_numpy(np.stack([p[0] for p in prepared])).to(device)
    outputs = net(x)
    flipped = net(torch.flip(x, dims=[3])) if flip_test else None
    return decode_batch(outputs, [p[1] for p in prepared], size, spec, cfg, flipped, refine)


def to_coco_results(image_id: int, keypoints: np.ndarray, scores: np.ndarray, category_id: int = 1) -> list[dict]:
    return [{"image_id": int(image_id), "category_id": category_id,
             "keypoints": [round(float(v), 2) for v in kp.ravel()], "score": round(float(s), 5)}
            for kp, s in zip(keypoints, scores)]
