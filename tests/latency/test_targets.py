"""Deployment targets: a runtime, a precision and threads named as one value, measured in real
onnxruntime and OpenVINO sessions, int8 models quantized with the network's decoding left float,
and every cache and latency model keyed by the target."""
from dataclasses import asdict, replace

import numpy as np
import onnx
import pytest

from nas.errors import PoseNASError
from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
from nas.latency.predictor import NAMES, LatencyPredictor
from nas.latency.settings import RuntimeSettings, target_of
from nas.search.study import run_search
from nas.subnet.onnx import session, to_onnx
from nas.subnet.precision import Int8, after_compute, reading_the_image
from search_spaces import SearchSpace
from supernet.network import new_static
from tests.search.test_search import FAST as SEARCH_FAST
from tests.search.test_search import config, meter

FAST = dict(warmup=1, repeats=5)


def test_a_target_is_one_value_for_runtime_precision_and_threads():
    assert RuntimeSettings().target == "onnxruntime/fp32/1"
    for text in ("openvino/int8/2", "onnxruntime/int8/0", "torch/fp32/4"):
        assert RuntimeSettings.of({"target": text}, "run.yaml (latency)").target == text
    int8 = RuntimeSettings.of({"target": "onnxruntime/int8/1", "repeats": 7}, "run.yaml (latency)")
    assert (int8.precision, int8.threads, int8.repeats) == ("int8", 1, 7)
    assert len({RuntimeSettings.of({"target": t}, "x").key() for t in
                ("onnxruntime/fp32/1", "onnxruntime/int8/1", "openvino/fp32/1", "onnxruntime/fp32/2")}) == 4
    assert target_of({"backend": "onnxruntime", "threads": 1}) == "onnxruntime/fp32/1"  # recorded before precision
    with pytest.raises(PoseNASError, match="run.yaml \\(latency\\): target 'int8': give RUNTIME/PRECISION/THREADS"):
        RuntimeSettings.of({"target": "int8"}, "run.yaml (latency)")
    with pytest.raises(PoseNASError, match="target 3: give RUNTIME/PRECISION/THREADS"):
        RuntimeSettings.of({"target": 3}, "run.yaml (latency)")


@pytest.mark.parametrize("head", ["ae", "query"])
def test_int8_quantizes_the_network_and_leaves_the_decoding_float(head):
    space = SearchSpace.load("tiny")
    arch = space.resolve("litepose_xs")
    arch = space.canonical({**arch, "head": {**arch["head"], "type": head}})
    model = to_onnx(new_static(arch, 17).eval(), arch["resolution"])
    int8 = onnx.load_from_string(Int8().apply(model))
    onnx.checker.check_model(int8)
    quantized = {n.name for n in int8.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    decoding = set(after_compute(int8.graph))
    assert len(quantized) > 20 and decoding and not quantized & decoding  # the maps reach the decoding in float
    stem = next(n for n in int8.graph.node if n.op_type == "Conv")  # the image reaches it in float
    floats = {init.name for init in int8.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    assert reading_the_image(int8.graph) == [stem.name] and stem.input[0] == "image" and stem.input[1] in floats
    x = {"image": np.random.default_rng(0).random((1, 3, arch["resolution"], arch["resolution"]), dtype=np.float32)}
    outputs = session(int8.SerializeToString()).run(None, x)  # it runs, with the fp32 model's outputs
    assert [o.shape for o in outputs] == [o.shape for o in session(model).run(None, x)]


@pytest.mark.parametrize("target", ["onnxruntime/int8/1", "openvino/fp32/1", "openvino/int8/1"])
def test_every_runtime_and_precision_is_measured_and_cached_apart(tmp_path, target):
    if target.startswith("openvino"):
        pytest.importorskip("openvino", reason="the openvino package is not installed")
    arch = SearchSpace.load("tiny").resolve("litepose_xs")
    cache = LatencyCache(tmp_path / "latency.sqlite")
    settings = RuntimeSettings.of({"target": target, **FAST}, "test")
    measured = LatencyMeter(LocalBackend(settings), cache)
    figures = measured.measure(arch)
    assert not figures["cached"] and figures["in_graph_decode_ms"] > 0 and figures["grouping_ms"] > 0
    # the network's share is the model's time less its decoding's, two timings apart: never below zero, and
    # with the post-processing it makes up the end-to-end time (more only where noise clipped it at zero)
    total = figures["network_ms"] + figures["postprocess_ms"]
    assert figures["network_ms"] >= 0 and (total == pytest.approx(figures["median_ms"]) or total > figures["median_ms"])
    card = measured.card_entry(arch)  # what an export records of it
    assert card["target"] == target and card["runtime"]["precision"] == settings.precision
    if settings.backend == "openvino":
        import openvino
        assert card["device"]["openvino"] == openvino.__version__
    default = LatencyMeter(LocalBackend(RuntimeSettings(**FAST)), cache)
    assert not default.measure(arch)["cached"], "another target is another measurement"
    assert LatencyMeter(LocalBackend(settings), cache).measure(arch)["cached"]


def test_a_latency_model_of_another_target_is_refused(tmp_path, tiny_supernet, synth_small):
    int8_model = tmp_path / "int8.json"
    LatencyPredictor([0.01] * len(NAMES), {}, asdict(replace(SEARCH_FAST, precision="int8"))).save(int8_model)
    with pytest.raises(PoseNASError, match="int8.json: a latency model of target onnxruntime/int8/1, but the search "
                                           "measures onnxruntime/fp32/1"):
        run_search(config(tmp_path, tiny_supernet, synth_small, predictor=str(int8_model)), meter(tmp_path),
                   progress=False)


def test_litert_times_its_own_conversion_of_the_deployed_model(tmp_path):
    pytest.importorskip("litert_torch", reason="the litert extra is not installed")
    from importlib.metadata import version

    from nas.latency.runtimes import runtime_of

    arch = SearchSpace.load("tiny").resolve("litepose_xs")
    settings = RuntimeSettings.of({"target": "litert/fp32/1", **FAST}, "test")
    measured = LatencyMeter(LocalBackend(settings), LatencyCache(tmp_path / "latency.sqlite"))
    figures = measured.measure(arch)
    assert figures["in_graph_decode_ms"] > 0 and figures["grouping_ms"] > 0 and figures["network_ms"] >= 0
    assert measured.card_entry(arch)["device"]["litert"] == version("ai-edge-litert")
    with pytest.raises(PoseNASError, match="a latency server is sent ONNX models, which it does not read"):
        runtime_of(settings).measure_model(to_onnx(new_static(arch, 17), 64), 64, False, 17, settings, None)


def test_a_litert_target_is_fp32_and_needs_its_extra():
    from nas.latency.runtimes import runtime_of

    try:
        import ai_edge_litert  # noqa: F401
        import litert_torch  # noqa: F401
        message = "LiteRT is timed in fp32 on its CPU kernels here; give litert/fp32/THREADS"
    except ImportError:
        message = r"not installed \(pip install 'posenas\[litert\]'\)"
    with pytest.raises(PoseNASError, match=message):
        runtime_of(RuntimeSettings.of({"target": "litert/int8/1"}, "test"))
