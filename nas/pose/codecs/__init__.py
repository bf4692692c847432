"""Codecs: what each head type means to the pose engine, one class per head type.

A head type named ``X`` has its modules and cost in ``supernet/heads/X.py`` and its codec here,
in ``X.py`` as ``CODEC``: its training loss (and whether it distils from a teacher), what its
exported graph holds (outputs and in-graph decoding), the step after the graph that yields
people, its post-processing latency term and how two runtimes' outputs compare. Nothing outside
the codecs compares a head type's name: everything else asks the codec of an arch config.
"""
from __future__ import annotations

import importlib
from functools import cache
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nas.errors import PoseNASError
from nas.pose.decode import DecodeConfig
from nas.pose.keypoints import KeypointSpec
from nas.pose.transforms import apply_to_points, invert
from search_spaces.space import HEAD_TYPES, head_type

People = tuple[np.ndarray, np.ndarray]  # keypoints (P, K, 3) in image pixels, a score per person (P,)


class Codec:
    name: str
    deployed_outputs: tuple[str, ...]  # the exported model's outputs, in this order
    distils: bool = False  # learns from a teacher's heatmaps (in-place distillation)

    def loss(self, net: nn.Module, batch, cfg, sigmas: torch.Tensor, autocast: Callable
             ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(loss, its three logged parts, the network's outputs) of one training batch (images,
        heatmaps, masks, tag indices, people); ``cfg`` holds the loss weights, ``sigmas`` the
        dataset's OKS sigmas; the forward pass runs under ``autocast()``."""
        raise NotImplementedError

    def teacher_maps(self, outputs: list[torch.Tensor], num_keypoints: int) -> list[torch.Tensor]:
        """What a student regresses of a teacher's outputs (with ``distils``)."""
        raise NotImplementedError

    def distillation(self, outputs: list[torch.Tensor], teacher: list[torch.Tensor], masks, num_keypoints: int
                     ) -> torch.Tensor:
        raise NotImplementedError

    def network_outputs(self, arch: dict) -> list[str]:
        """Output names of the network alone (no in-graph decoding)."""
        raise NotImplementedError

    def deployed(self, net: nn.Module, cfg: DecodeConfig = DecodeConfig()) -> nn.Module:
        """The network with the decoding that lives in its graph: what ``model.onnx`` holds."""
        raise NotImplementedError

    def decoding_alone(self, num_keypoints: int, resolution: int, multi_resolution: bool
                       ) -> tuple[nn.Module, list[tuple[int, ...]]] | None:
        """The in-graph decoding on its own and the shapes it is fed (to time its share of a
        deployed model), or None where the graph holds none beyond the network."""
        return None

    def after_graph(self, num_keypoints: int, resolution: int, multi_resolution: bool, people: int
                    ) -> Callable[[], object] | None:
        """A call of the post-processing that runs after the graph on a crowd of ``people``
        (what latency times), or None where people come straight out of the graph."""
        return None

    def postprocess_key(self, arch: dict) -> str | None:
        """What this head's post-processing time depends on in an arch config (a latency model's
        lookup key), or None where it has none."""
        return None

    def decode_batch(self, outputs: list[torch.Tensor], matrices: Sequence[np.ndarray], size: int,
                     spec: KeypointSpec, cfg: DecodeConfig, flipped: list[torch.Tensor] | None) -> list[People]:
        """People of each image of a batch of network outputs (``flipped``: of the mirrored images)."""
        raise NotImplementedError

    def people(self, outputs: Sequence[np.ndarray], matrix: np.ndarray, size: int, spec: KeypointSpec,
               cfg: DecodeConfig) -> People:
        """People of one image from a deployed model's outputs."""
        raise NotImplementedError

    def difference(self, got: list[np.ndarray], expected: list[np.ndarray], arch: dict, deployed: bool) -> float:
        """Largest difference between two runtimes' outputs of the same input, as decoding sees them."""
        raise NotImplementedError


@cache
def codec_named(name: str) -> Codec:
    return importlib.import_module(f"nas.pose.codecs.{name}").CODEC


def codec_of(arch: dict) -> Codec:
    """The codec of an arch config's head."""
    return codec_named(head_type(arch))


def codec_of_model(output_names: Sequence[str]) -> Codec:
    """The codec whose deployed model has these outputs (a model sent to a latency server, say)."""
    for name in HEAD_TYPES:
        if codec_named(name).deployed_outputs == tuple(output_names):
            return codec_named(name)
    raise PoseNASError(f"model outputs {list(output_names)[:6]}: not a deployed PoseNAS model (a head's outputs "
                       f"are one of {[list(codec_named(n).deployed_outputs) for n in HEAD_TYPES]})")


def letterboxed(kps: np.ndarray, matrix: np.ndarray, stride: float) -> np.ndarray:
    """Keypoints at a map of ``stride`` moved to original image pixels (``matrix``: image to input)."""
    kps[..., :2] = apply_to_points(invert(matrix), (kps[..., :2] + 0.5) * stride - 0.5)
    return kps
