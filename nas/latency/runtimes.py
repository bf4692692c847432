"""The runtimes a subnet is timed in on this machine, one class each.

A deployment runtime (onnxruntime, OpenVINO; LiteRT from its own conversion) times the exported
model (``to_onnx``: the network with its head's in-graph decoding) in the target's precision
(``nas.subnet.precision``) and the post-processing after the graph for a stated crowd: warm-up
runs, then single-image runs in rounds interleaved with a reference network, scaled by the reference's
calibrated latency (``Stopwatch``); the figures are the median, the 90th percentile and the spread
(p90 / p10), with the machine's load and the reference's slowdown. ``torch`` times eager PyTorch
for comparison: it is not a deployment latency.

The command line reads ``RUNTIMES`` before it sets torch's threads, so this module imports what
measures (torch, onnxruntime, openvino, litert) only when it measures.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from nas.errors import PoseNASError
from nas.latency.settings import DEFAULT, RuntimeSettings

if TYPE_CHECKING:
    from nas.latency.stopwatch import Stopwatch


class Runtime:
    """How subnets run and are timed on this machine."""
    name: str
    label: str  # what a report calls its figures
    deployment = False  # times exported models as a user deploys them (and so may serve a latency server)

    def check(self, settings: RuntimeSettings) -> None:
        """Refuse settings this runtime cannot honour, in one line."""

    def measure(self, arch: dict, num_keypoints: int, settings: RuntimeSettings,
                stopwatch: Callable[[], Stopwatch]) -> dict:
        """The figures of subnet ``arch`` (``stopwatch``: this device's, made on first use)."""
        raise NotImplementedError

    def measure_model(self, model: bytes, resolution: int, multi_resolution: bool, num_keypoints: int,
                      settings: RuntimeSettings, watch: Stopwatch) -> dict:
        """The figures of an exported model (what a latency server is sent)."""
        raise PoseNASError(f"{self.label} does not run exported models")

    def versions(self) -> dict:
        """The runtime's version where the device fingerprint does not already name it."""
        return {}


def require(extra: str, packages: dict[str, str]) -> None:
    """Refuse a target whose runtime's packages (module -> package) are not installed, in one line
    naming the extra that installs them."""
    import importlib

    try:
        for module in packages:
            importlib.import_module(module)
    except ImportError:
        names = " and ".join(packages.values())
        raise PoseNASError(f"target {extra}: the {names} package{'s are' if len(packages) > 1 else ' is'} not "
                           f"installed (pip install 'posenas[{extra}]')") from None


class Deployment(Runtime):
    """A runtime that times exported models as a user deploys them, in the target's precision."""
    deployment = True

    def session(self, model: bytes, settings: RuntimeSettings) -> Callable[[], object]:
        """A call of ``model`` on fixed random inputs (their values do not change these models' time)."""
        raise NotImplementedError

    def inference(self, model: bytes, settings: RuntimeSettings) -> Callable[..., list]:
        """``model`` loaded once: called with its inputs (arrays), it returns its outputs (arrays)."""
        raise NotImplementedError

    def measure(self, arch, num_keypoints, settings, stopwatch):
        from nas.pose.codecs import codec_of

        return self.measure_model(self.export(arch, num_keypoints, settings.latency_of), arch["resolution"],
                                  arch["head"]["multi_resolution"], num_keypoints, settings, stopwatch(),
                                  codec_of(arch))

    def export(self, arch: dict, num_keypoints: int, latency_of: str) -> bytes:
        """What this runtime loads of a subnet: the exported ONNX network, or deployed model."""
        return export_for(arch, num_keypoints, latency_of)

    def decoding(self, codec, num_keypoints: int, resolution: int, multi_resolution: bool) -> bytes | None:
        """A head's in-graph decoding alone as this runtime loads it (None: its graph holds none)."""
        from nas.subnet.onnx import decoding_onnx

        return decoding_onnx(codec, num_keypoints, resolution, multi_resolution)

    def measure_model(self, model, resolution, multi_resolution, num_keypoints, settings, watch, codec=None):
        """A network alone (``latency_of`` network), or a deployed model and the post-processing
        after it for ``settings.people`` people: the total from a letterboxed image to people,
        with the in-graph decoding (float in every precision) also timed alone so that network and
        post-processing are reported apart (each zero where the model's head has none: people out
        of the graph). ``codec``: the model's head's (a model sent to a latency server names it by
        its outputs)."""
        import onnx

        from nas.pose.codecs import codec_of_model
        from nas.subnet.precision import precision_of

        timed = watch.time(self.session(precision_of(settings.precision).apply(model), settings))
        if settings.latency_of == "network":
            return {**timed, "network_ms": timed["median_ms"]}
        codec = codec or codec_of_model([o.name for o in onnx.load_from_string(model).graph.output])
        in_graph = watch.once(("in_graph", codec.name, num_keypoints, resolution, multi_resolution),
                              lambda: (decoding := self.decoding(codec, num_keypoints, resolution, multi_resolution))
                              and self.session(decoding, settings))
        after = ("grouping", codec.name, num_keypoints, resolution, multi_resolution, settings.people)
        grouping = watch.once(after, lambda: codec.after_graph(num_keypoints, resolution, multi_resolution,
                                                               settings.people))
        return {**timed, "median_ms": timed["median_ms"] + grouping["median_ms"],
                "p90_ms": timed["p90_ms"] + grouping["p90_ms"],
                "network_ms": max(timed["median_ms"] - in_graph["median_ms"], 0.0),
                "postprocess_ms": in_graph["median_ms"] + grouping["median_ms"],
                "in_graph_decode_ms": in_graph["median_ms"], "grouping_ms": grouping["median_ms"],
                "people": settings.people}


class OnnxRuntime(Deployment):
    name, label = "onnxruntime", "onnxruntime"

    def session(self, model, settings):
        from nas.subnet.onnx import runner

        return runner(model, settings.threads, settings.optimization, settings.provider)

    def inference(self, model, settings):
        from nas.subnet.onnx import inference

        return inference(model, settings.threads, settings.optimization, settings.provider)


class OpenVino(Deployment):
    """Intel's runtime, its CPU plugin reading the exported ONNX model; fp32 held as fp32 (it
    would pick bf16 on CPUs that have it), a QDQ model run with its int8 kernels."""
    name, label = "openvino", "OpenVINO"

    def check(self, settings: RuntimeSettings) -> None:
        require("openvino", {"openvino": "openvino"})
        if settings.provider != DEFAULT.provider:
            raise PoseNASError(f"target {settings.target}: OpenVINO runs on its CPU plugin here; name no provider")

    def versions(self) -> dict:
        import openvino

        return {"openvino": openvino.__version__}

    def compiled(self, model: bytes, settings: RuntimeSettings):
        import openvino

        core = openvino.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  **({"INFERENCE_NUM_THREADS": settings.threads} if settings.threads else {})}
        return core.compile_model(core.read_model(model), "CPU", config)

    def session(self, model, settings):
        import numpy as np

        compiled = self.compiled(model, settings)
        request, rng = compiled.create_infer_request(), np.random.default_rng(0)
        feeds = [rng.random(tuple(i.get_shape()), dtype=np.float32) for i in compiled.inputs]
        return lambda: request.infer(feeds)

    def inference(self, model, settings):
        import numpy as np

        compiled = self.compiled(model, settings)
        request = compiled.create_infer_request()
        return lambda *inputs: [np.array(out) for out in request.infer(list(inputs)).to_tuple()]


class LiteRt(Deployment):
    """Google's runtime for phones (XNNPACK on their CPUs), loading its own conversion of the subnet
    (litert-torch, seconds a subnet; the in-graph decoding converts too). fp32 only; it measures
    where it runs: a latency server is sent ONNX, which LiteRT does not read."""
    name, label = "litert", "LiteRT"

    def check(self, settings: RuntimeSettings) -> None:
        require("litert", {"litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert"})
        if settings.precision != DEFAULT.precision or settings.provider != DEFAULT.provider:
            raise PoseNASError(f"target {settings.target}: LiteRT is timed in fp32 on its CPU kernels here; give "
                               f"litert/fp32/THREADS")

    def versions(self) -> dict:
        from importlib.metadata import version

        return {"litert": version("ai-edge-litert"), "litert_torch": version("litert-torch")}

    def export(self, arch, num_keypoints, latency_of):
        import torch

        from nas.pose.codecs import codec_of
        from supernet.network import new_static

        net = new_static(arch, num_keypoints).eval()
        module = codec_of(arch).deployed(net) if latency_of == "total" else net
        return litert_model(module, (torch.zeros(1, 3, arch["resolution"], arch["resolution"]),))

    def decoding(self, codec, num_keypoints, resolution, multi_resolution):
        import torch

        alone = codec.decoding_alone(num_keypoints, resolution, multi_resolution)
        if alone is None:
            return None
        module, shapes = alone
        return litert_model(module, tuple(torch.rand(s) for s in shapes))

    def measure_model(self, model, resolution, multi_resolution, num_keypoints, settings, watch, codec=None):
        if codec is None:
            raise PoseNASError("LiteRT converts a subnet from torch where it measures: a latency server is sent "
                               "ONNX models, which it does not read")
        return super().measure_model(model, resolution, multi_resolution, num_keypoints, settings, watch, codec)

    def session(self, model, settings):
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=model, num_threads=settings.threads or None)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for tensor in interpreter.get_input_details():
            interpreter.set_tensor(tensor["index"], rng.random(tensor["shape"], dtype=np.float32))
        return interpreter.invoke

    def inference(self, model, settings):
        raise PoseNASError("LiteRT runs the models it converts from a subnet to time them; an export's ONNX model "
                           "runs in onnxruntime or openvino")


def litert_model(module, inputs: tuple) -> bytes:
    """``module`` converted to a LiteRT flatbuffer by litert-torch, its converter's chatter kept off the terminal."""
    import contextlib
    import io
    import os
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import litert_torch

    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        path = os.path.join(folder, "model.tflite")
        litert_torch.convert(module.eval(), inputs).export(path)
        with open(path, "rb") as f:
            return f.read()


class TorchEager(Runtime):
    name, label = "torch", "torch eager (not a deployment latency)"

    def check(self, settings: RuntimeSettings) -> None:
        if settings.precision != DEFAULT.precision:
            raise PoseNASError(f"target {settings.target}: the torch backend times fp32 only")
        if settings.latency_of == "total":
            raise PoseNASError("the torch backend times the network alone (eager, for comparison): "
                               "give --latency-of network with it")

    def measure(self, arch, num_keypoints, settings, stopwatch):
        import torch

        from nas.latency.timing import time_runs
        from supernet.network import new_static

        net = new_static(arch, num_keypoints).eval()
        x = torch.randn(1, 3, arch["resolution"], arch["resolution"])
        threads = torch.get_num_threads()
        if settings.threads:
            torch.set_num_threads(settings.threads)
        try:
            with torch.inference_mode():
                timed = time_runs(lambda: net(x), settings.warmup, settings.repeats)
            return {**timed, "network_ms": timed["median_ms"]}
        finally:
            torch.set_num_threads(threads)


RUNTIMES = {runtime.name: runtime for runtime in (OnnxRuntime(), OpenVino(), LiteRt(), TorchEager())}


def installed_versions() -> dict:
    """The versions of every deployment runtime installed here (what a latency server's
    fingerprint names: its clients' caches key by it, whichever runtime they ask for)."""
    versions = {}
    for runtime in RUNTIMES.values():
        try:
            versions.update(runtime.versions() if runtime.deployment else {})
        except ImportError:
            pass
    return versions


def runtime_of(settings: RuntimeSettings) -> Runtime:
    """The runtime ``settings.backend`` names, having checked the settings."""
    runtime = RUNTIMES.get(settings.backend)
    if runtime is None:
        raise PoseNASError(f"target runtime {settings.backend!r} unknown; use one of {list(RUNTIMES)}")
    runtime.check(settings)
    return runtime


def export_for(arch: dict, num_keypoints: int, latency_of: str) -> bytes:
    """What is timed of a subnet: its network, or its deployed model (with in-graph decoding)."""
    from nas.subnet.onnx import to_onnx
    from supernet.network import new_static

    return to_onnx(new_static(arch, num_keypoints), arch["resolution"], decode=latency_of == "total")
