"""The numeric precision a deployed model runs in, one class each: what turns the exported fp32
ONNX model into the model the target runs.

int8 is onnxruntime's post-training static quantization (QDQ, per-channel weights) after its
pre-processing (without it the int8 models ran 2-3.4x slower than fp32), calibrated on the images
a caller gives (the images BN recalibration uses; random images where only time matters: the
scales do not change it). The network quantizes but for the convolution that reads the image
(``reading_the_image``: quantizing the image cost zoo:cpu-synth's int8 subnets up to 0.016 AP,
kept float at most 0.008, and no time); what runs after its last convolution or matrix product
(the in-graph decoding: peaks, top-k, gathers) stays float (``after_compute``). Depthwise
convolutions left float measured 4-7x slower than fp32 in onnxruntime: precision is not split by
operator kind otherwise.
onnxruntime and OpenVINO both run the QDQ graph, each with its int8 kernels (NNCF's own
quantization for OpenVINO measured 0.85-0.90x of fp32 on MBConv networks against the QDQ graph's
0.67-0.91x, 0.31x against 0.39x on HRNet's: not faster across networks, so one model serves both).
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np

from nas.errors import PoseNASError

COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
CALIBRATION_IMAGES = 8  # random images calibrate a model that is only timed


class Precision:
    name: str
    exact: bool  # the deployed model computes what torch does: its AP is the inherited one
    recipe: str  # how the model is made: a new recipe is a new measurement (latency and AP caches key by it)

    def apply(self, model: bytes, images: Iterable[np.ndarray] | None = None) -> bytes:
        """``model`` in this precision; ``images``: (1, 3, R, R) inputs to calibrate on (None: random)."""
        raise NotImplementedError


class Float32(Precision):
    name, exact, recipe = "fp32", True, "as exported"

    def apply(self, model, images=None):
        return model


class Int8(Precision):
    name, exact, recipe = "int8", False, "onnxruntime QDQ per-channel, image and decoding float"

    def apply(self, model, images=None):
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        graph = onnx.load_from_string(model).graph
        name, shape = graph.input[0].name, [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        if images is None:
            rng = np.random.default_rng(0)
            images = (rng.random(shape, dtype=np.float32) for _ in range(CALIBRATION_IMAGES))

        class Feeds(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter({name: np.asarray(x, dtype=np.float32)} for x in images)

            def get_next(self):
                return next(self.feeds, None)

        with tempfile.TemporaryDirectory() as folder, quiet():  # the quantizer reads and writes files
            fp32, prepared, int8 = (Path(folder) / f for f in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
            fp32.write_bytes(model)
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(int8), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=float_nodes(onnx.load(str(prepared)).graph))
            return float_after_compute(onnx.load(str(int8))).SerializeToString()


@contextmanager
def quiet():
    """The quantizer's notices (a layer norm's weights quantized per tensor, not per channel) kept
    off the user's terminal."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def after_compute(graph) -> list[str]:
    """The nodes that feed no convolution or matrix product: what runs after the network."""
    producer = {out: node for node in graph.node for out in node.output}
    feeding, todo = set(), [n for n in graph.node if n.op_type in COMPUTE_OPS]
    while todo:
        node = todo.pop()
        if node.name not in feeding:
            feeding.add(node.name)
            todo += [producer[i] for i in node.input if i in producer]
    return [n.name for n in graph.node if n.name not in feeding]


def reading_the_image(graph) -> list[str]:
    """The convolutions (or matrix products) the image reaches before any other: they read it in float."""
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    reading, seen, todo = [], set(), [i.name for i in graph.input]
    while todo:
        for node in consumers.get(todo.pop(), []):
            if node.name not in seen:
                seen.add(node.name)
                if node.op_type in COMPUTE_OPS:
                    reading.append(node.name)
                else:
                    todo += list(node.output)
    return reading


def float_nodes(graph) -> list[str]:
    """What int8 leaves float: the convolution that reads the image, and the decoding after the network."""
    return reading_the_image(graph) + after_compute(graph)


def float_after_compute(model):
    """``model`` without the quantize-dequantize pairs the quantizer put on the network's last
    outputs: the decoding reads the maps in float, not in 256 levels."""
    graph = model.graph
    after, producer = set(after_compute(graph)), {out: node for node in graph.node for out in node.output}
    rewired, dropped = {}, set()
    for node in graph.node:
        source = producer.get(node.input[0]) if node.input else None
        if node.op_type == "DequantizeLinear" and node.name in after and source is not None \
                and source.op_type == "QuantizeLinear" and source.name in after:
            rewired[node.output[0]] = source.input[0]
            dropped |= {node.name, source.name}
    kept = [node for node in graph.node if node.name not in dropped]
    for node in kept:
        node.input[:] = [rewired.get(i, i) for i in node.input]
    for output in graph.output:  # a map that is itself an output keeps its name
        if output.name in rewired:
            kept.append(onnx_identity(rewired[output.name], output.name))
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for node in kept for i in node.input}
    unused = [init for init in graph.initializer if init.name not in used]  # the pairs' scales and zero points
    for init in unused:
        graph.initializer.remove(init)
    return model


def onnx_identity(source: str, name: str):
    import onnx

    return onnx.helper.make_node("Identity", [source], [name], name=f"{name}_float")


PRECISIONS = {precision.name: precision for precision in (Float32(), Int8())}


def precision_of(name: str) -> Precision:
    if name not in PRECISIONS:
        raise PoseNASError(f"precision {name!r} unknown; use one of {list(PRECISIONS)}")
    return PRECISIONS[name]
