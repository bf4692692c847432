"""ONNX export of a static network at one input resolution, checked against torch in onnxruntime."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import torch

OPSET = 17
INPUT = "image"


def to_onnx(net: torch.nn.Module, resolution: int) -> bytes:
    """The network as an ONNX model with a fixed (1, 3, R, R) input, as deployment runs it.

    Uses the TorchScript exporter: it needs no extra package and handles the token stage's top-k
    with a constant k, which a fixed resolution makes possible."""
    buffer = io.BytesIO()
    was_training = net.training
    outputs = ["stride4", "stride2"] if net.arch["head"]["multi_resolution"] else ["stride4"]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(net.cpu().eval(), torch.zeros(1, 3, resolution, resolution), buffer, dynamo=False,
                          opset_version=OPSET, input_names=[INPUT], output_names=outputs)
    net.train(was_training)
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


def max_abs_difference(net: torch.nn.Module, model: bytes, resolution: int, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over all outputs for one random input."""
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = net.eval()(x)
    outputs = session(model).run(None, {INPUT: x.numpy()})
    return max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected))
