"""ONNX export of a static network at one input resolution, checked against torch in onnxruntime."""
from __future__ import annotations

import io
import warnings
from functools import lru_cache

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from nas.pose.decode import Candidates, DecodeConfig, divide_heatmaps, nms_radius
from nas.pose.grouping import drop_equal_peaks

OPSET = 17
INPUT = "image"
OUTPUTS = ("heatmaps", "tags", "candidates", "candidate_tags")  # a deployed AE model's, in this order
PEOPLE = ("people",)  # a query head's, deployed or not: (1, Q, K + 1, 3), see supernet.query


class Deployed(nn.Module):
    """A network with the decoding that lives in its graph (``Candidates``: heatmaps aggregated
    across resolutions, NMS, each joint's top candidates and their tags): what ``model.onnx`` holds
    and what deployment latency times. ``group_candidates`` turns its outputs into people."""

    def __init__(self, net: nn.Module, cfg: DecodeConfig = DecodeConfig()):
        super().__init__()
        self.net, self.arch = net, net.arch
        self.candidates = Candidates(net.num_keypoints, finest_stride(net.arch), cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.arch["head"]["type"] == "query":
            return tuple(self.net(x))
        return self.candidates(*divide_heatmaps(self.net(x), self.net.num_keypoints))


def finest_stride(arch: dict) -> int:
    """The stride of a network's finest output, where decoding works."""
    return 2 if arch["head"]["multi_resolution"] else 4


def to_onnx(net: nn.Module, resolution: int, decode: bool = True) -> bytes:
    """The network (with its in-graph decoding unless ``decode`` is False) as an ONNX model with a
    fixed (1, 3, R, R) input, as deployment runs it.

    Uses the TorchScript exporter: it needs no extra package and handles the token stage's top-k
    with a constant k, which a fixed resolution makes possible."""
    was_training = net.training
    module = Deployed(net.cpu().eval()) if decode else net.cpu().eval()
    if net.arch["head"]["type"] == "query":
        outputs = list(PEOPLE)
    else:
        outputs = list(OUTPUTS) if decode else ["stride4", "stride2"][:1 + net.arch["head"]["multi_resolution"]]
    model = _export(module, (torch.zeros(1, 3, resolution, resolution),), [INPUT], outputs)
    net.train(was_training)
    return model


@lru_cache(maxsize=32)
def candidates_onnx(num_keypoints: int, resolution: int, multi_resolution: bool) -> bytes:
    """The in-graph decoding alone, fed a network's outputs: its share of a deployed model's time
    (exported once per process and shape)."""
    shapes = [(1, 2 * num_keypoints, resolution // 4, resolution // 4)]
    if multi_resolution:
        shapes.append((1, num_keypoints, resolution // 2, resolution // 2))
    module = Candidates(num_keypoints, 2 if multi_resolution else 4)
    return _export(module, tuple(torch.rand(s) for s in shapes), [f"out{i}" for i in range(len(shapes))],
                   list(OUTPUTS))


def _export(module: nn.Module, inputs: tuple, input_names: list[str], output_names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=output_names)
    return buffer.getvalue()


def outputs_people(model: bytes) -> bool:
    """Whether an exported model hands out people (a query head), not maps to decode."""
    return [o.name for o in onnx.load_from_string(model).graph.output] == list(PEOPLE)


def session(model: bytes, threads: int = 0, optimization: str = "all",
            provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    return ort.InferenceSession(model, options, providers=[provider])


def runner(model: bytes, threads: int = 0, optimization: str = "all", provider: str = "CPUExecutionProvider"):
    """A call of ``model`` in a session of its own on fixed random inputs of every input's (static)
    shape: what latency times (the values do not change the time of these models)."""
    sess = session(model, threads, optimization, provider)
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random(i.shape, dtype=np.float32) for i in sess.get_inputs()}
    return lambda: sess.run(None, feeds)


def max_abs_difference(net: nn.Module, model: bytes, resolution: int, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over all outputs for one random input (of a deployed model:
    over candidates that are peaks; the order of the zero-score rest is arbitrary)."""
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))
    sess = session(model)
    deployed = [o.name for o in sess.get_outputs()] == list(OUTPUTS)
    with torch.no_grad():
        expected = [e.numpy() for e in (Deployed(net) if deployed else net).eval()(x)]
    outputs = sess.run(None, {INPUT: x.numpy()})
    if outputs_people(model):
        return people_difference(outputs[0][0], expected[0][0], resolution // 4)
    if deployed:
        radius = nms_radius(DecodeConfig(), finest_stride(net.arch))
        outputs, expected = comparable(outputs, radius), comparable(expected, radius)
    return max(float(np.abs(o - e).max()) for o, e in zip(outputs, expected))


def people_difference(got: np.ndarray, expected: np.ndarray, size: int) -> float:
    """Largest difference between two runtimes' people (Q, K + 1, 3) of the same seed position,
    coordinates relative to the map's ``size``: where two centre peaks tie, the runtimes may pick
    different ones (and go on from different places), so only people seeded alike compare (at
    least half of them must be; else infinity)."""
    seeds = {tuple(p[-1, :2]): p for p in expected}
    same = [(p, seeds[tuple(p[-1, :2])]) for p in got if tuple(p[-1, :2]) in seeds]
    if len(same) < len(expected) / 2:
        return float("inf")
    scale = np.array([1 / size, 1 / size, 1.0])
    return max(float(np.abs((a - b) * scale).max()) for a, b in same)


def comparable(outputs: list[np.ndarray], radius: int, floor: float = 0.05) -> list[np.ndarray]:
    """A deployed model's outputs as grouping sees them (equal peaks counted once:
    ``drop_equal_peaks``), candidate rows scoring below ``floor`` (far below any detection threshold)
    zeroed and the rest in one order (score to 1e-4, then y, then x): top-k orders ties (non-peaks
    score 0, equal peaks, the many small peaks of heatmap tails competing for the last places)
    differently in each runtime, and their scores differ by rounding."""
    heat, tags, joints, joint_tags = outputs
    joints = drop_equal_peaks(joints[0], radius)[None]
    peak = joints[..., 2:] >= floor
    joints, joint_tags = joints * peak, joint_tags * peak[..., 0]
    order = np.lexsort((joints[..., 0], joints[..., 1], -np.round(joints[..., 2], 4)), axis=-1)  # ties up to 1e-4
    return [heat, tags, np.take_along_axis(joints, order[..., None], -2), np.take_along_axis(joint_tags, order, -1)]
