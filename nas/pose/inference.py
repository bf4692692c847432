"""Run a pose network on whole images and turn its outputs into COCO keypoint results."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from nas.pose.codecs import Codec, codec_of
from nas.pose.completion import Completion
from nas.pose.decode import DecodeConfig
from nas.pose.keypoints import KeypointSpec
from nas.pose.transforms import letterbox_matrix, normalize, warp_image


def prepare(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Letterboxed, normalised (3, size, size) input and the image-to-input matrix."""
    h, w = image.shape[:2]
    m = letterbox_matrix(w, h, size)
    return normalize(warp_image(image, m, size)), m


def decode_batch(codec: Codec, outputs: list[torch.Tensor], matrices: Sequence[np.ndarray], size: int,
                 spec: KeypointSpec, cfg: DecodeConfig = DecodeConfig(), flipped: list[torch.Tensor] | None = None,
                 refine: Completion | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """People per image from a batch of network outputs of ``codec``'s head: keypoints (P, K, 3)
    in original image pixels (``matrices`` map each image into the input) and a score per person
    (P,). ``refine``: a skeleton completer moves the joints scoring under ``cfg.missing_below``."""
    return [completed(kps, scores, refine, cfg)
            for kps, scores in codec.decode_batch(outputs, matrices, size, spec, cfg, flipped)]


def completed(kps: np.ndarray, scores: np.ndarray, refine: Completion | None, cfg: DecodeConfig
              ) -> tuple[np.ndarray, np.ndarray]:
    """One image's people, their missing joints completed where a completer is given."""
    return (kps if refine is None else refine.refine(kps, cfg.missing_below)), scores


def people_from_deployed(codec: Codec, outputs: Sequence[np.ndarray], matrix: np.ndarray, size: int,
                         spec: KeypointSpec, cfg: DecodeConfig = DecodeConfig(), refine: Completion | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """People of one image from a deployed model's outputs (``codec.deployed``): the step after
    the graph."""
    return completed(*codec.people(outputs, matrix, size, spec, cfg), refine, cfg)


@torch.no_grad()
def detect(net: torch.nn.Module, images: Sequence[np.ndarray], size: int, spec: KeypointSpec,
           flip_test: bool = False, cfg: DecodeConfig = DecodeConfig(),
           device: torch.device | str = "cpu", refine: Completion | None = None
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Letterbox each image to ``size``, run the network (its active subnet: ``net.active``; and
    its mirror with flip test), decode as its head's codec does."""
    prepared = [prepare(img, size) for img in images]
    x = torch.from_numpy(np.stack([p[0] for p in prepared])).to(device)
    outputs = net(x)
    flipped = net(torch.flip(x, dims=[3])) if flip_test else None
    return decode_batch(codec_of(net.active), outputs, [p[1] for p in prepared], size, spec, cfg, flipped, refine)


def to_coco_results(image_id: int, keypoints: np.ndarray, scores: np.ndarray, category_id: int = 1) -> list[dict]:
    return [{"image_id": int(image_id), "category_id": category_id,
             "keypoints": [round(float(v), 2) for v in kp.ravel()], "score": round(float(s), 5)}
            for kp, s in zip(keypoints, scores)]
