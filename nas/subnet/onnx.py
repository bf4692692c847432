"""ONNX export of a static network at one input resolution, checked against torch in onnxruntime."""
from __future__ import annotations

import io
import warnings
from functools import lru_cache

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from nas.pose.codecs import Codec, codec_of

OPSET = 17
INPUT = "image"


def to_onnx(net: nn.Module, resolution: int, decode: bool = True) -> bytes:
    """The network (with its head's in-graph decoding unless ``decode`` is False) as an ONNX model
    with a fixed (1, 3, R, R) input, as deployment runs it.

    Uses the TorchScript exporter: it needs no extra package and handles the token stage's top-k
    with a constant k, which a fixed resolution makes possible."""
    was_training = net.training
    codec = codec_of(net.arch)
    net = net.cpu().eval()
    module = codec.deployed(net) if decode else net
    outputs = list(codec.deployed_outputs) if decode else codec.network_outputs(net.arch)
    model = _export(module, (torch.zeros(1, 3, resolution, resolution),), [INPUT], outputs)
    net.train(was_training)
    return model


@lru_cache(maxsize=32)
def decoding_onnx(codec: Codec, num_keypoints: int, resolution: int, multi_resolution: bool) -> bytes | None:
    """A head's in-graph decoding alone, fed a network's outputs: its share of a deployed model's
    time (exported once per process and shape); None where the graph holds no decoding."""
    alone = codec.decoding_alone(num_keypoints, resolution, multi_resolution)
    if alone is None:
        return None
    module, shapes = alone
    return _export(module, tuple(torch.rand(s) for s in shapes), [f"out{i}" for i in range(len(shapes))],
                   list(codec.deployed_outputs))


def _export(module: nn.Module, inputs: tuple, input_names: list[str], output_names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=output_names)
    return buffer.getvalue()


def session(model: bytes, threads: int = 0, optimization: str = "all",
            provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    return ort.InferenceSession(model, options, providers=[provider])


def inference(model: bytes, threads: int = 0, optimization: str = "all", provider: str = "CPUExecutionProvider"):
    """``model`` loaded once in onnxruntime: called with its inputs (arrays), it returns its outputs."""
    sess = session(model, threads, optimization, provider)
    names = [i.name for i in sess.get_inputs()]
    return lambda *inputs: sess.run(None, dict(zip(names, inputs)))


def runner(model: bytes, threads: int = 0, optimization: str = "all", provider: str = "CPUExecutionProvider"):
    """A call of ``model`` in a session of its own on fixed random inputs of every input's (static)
    shape: what latency times (the values do not change the time of these models)."""
    sess = session(model, threads, optimization, provider)
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random(i.shape, dtype=np.float32) for i in sess.get_inputs()}
    return lambda: sess.run(None, feeds)


def max_abs_difference(net: nn.Module, model: bytes, resolution: int, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over all outputs for one random input, as the head's codec
    compares them (a deployed AE model's over candidates that are peaks, say)."""
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))
    sess = session(model)
    codec = codec_of(net.arch)
    deployed = tuple(o.name for o in sess.get_outputs()) == codec.deployed_outputs
    with torch.no_grad():
        expected = [e.numpy() for e in (codec.deployed(net) if deployed else net).eval()(x)]
    return codec.difference(sess.run(None, {INPUT: x.numpy()}), expected, net.arch, deployed)
