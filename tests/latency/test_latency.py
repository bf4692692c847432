"""Latency: onnxruntime and torch backends, the persistent cache, the HTTP server, the predictor."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.app.cli import main
from nas.errors import PoseNASError
from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend, RemoteBackend, device_fingerprint
from nas.latency.predictor import LatencyPredictor, feature_vector, within
from nas.latency.settings import RuntimeSettings
from search_spaces import SearchSpace

POSENAS = str(Path(sys.executable).with_name("posenas"))
FAST = dict(warmup=1, repeats=5)


def test_onnxruntime_and_torch_backends_report_median_p90_and_spread():
    arch = SearchSpace.load("tiny").max()
    for backend in ("onnxruntime", "torch"):
        figures = LocalBackend(RuntimeSettings(backend=backend, **FAST)).measure(arch)
        assert 0 < figures["median_ms"] <= figures["p90_ms"] and figures["spread"] >= 1.0
        assert figures["runs"] == 5


def test_cache_measures_a_config_once_per_device_and_settings(tmp_path):
    space = SearchSpace.load("tiny")
    arch = space.min()
    meter = LatencyMeter(LocalBackend(RuntimeSettings(**FAST)), LatencyCache(tmp_path / "lat.sqlite"))
    first, second = meter.measure(arch), meter.measure(arch)
    assert not first["cached"] and second["cached"] and first["median_ms"] == second["median_ms"]
    reopened = LatencyMeter(LocalBackend(RuntimeSettings(**FAST)), LatencyCache(tmp_path / "lat.sqlite"))
    assert reopened.measure(arch)["cached"], "a new process finds the measurement"
    other = LatencyMeter(LocalBackend(RuntimeSettings(threads=1, **FAST)), LatencyCache(tmp_path / "lat.sqlite"))
    assert not other.measure(arch)["cached"], "other runtime settings are another measurement"
    assert not meter.measure(space.max())["cached"]
    assert len(LatencyCache(tmp_path / "lat.sqlite")) == 3


def test_bad_runtime_settings_are_named():
    with pytest.raises(PoseNASError, match="optimization 'fast' unknown"):
        RuntimeSettings(optimization="fast")
    with pytest.raises(PoseNASError, match="latency backend 'tflite' unknown"):
        RuntimeSettings(backend="tflite")


def test_latency_server_measures_over_loopback():
    server = subprocess.Popen([POSENAS, "latency-server", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", server.stdout.readline()).group(0)
        remote = RemoteBackend(url, RuntimeSettings(**FAST))
        assert remote.fingerprint == json.loads(json.dumps(device_fingerprint()))
        figures = remote.measure(SearchSpace.load("tiny").min())
        assert 0 < figures["median_ms"] <= figures["p90_ms"] and figures["runs"] == 5
        with pytest.raises(PoseNASError, match="model not runnable"):
            remote._request("/measure", b"not an onnx model", {"resolution": 64})
    finally:
        server.terminate()
        server.wait()
    with pytest.raises(PoseNASError, match="unreachable"):
        RemoteBackend(url)


def test_predictor_recovers_a_linear_cost_model_and_round_trips(tmp_path):
    space = SearchSpace.load("cpu")
    archs = [space.random(s) for s in range(40)]
    truth = np.array([0.3, 0.4, 0.004, 0.02, 0.01, 0.003, 0.002, 0.05, 0.03, 0.001, 0.01])  # intercept, stride-2 head, costs
    latencies = [float(feature_vector(a) @ truth) for a in archs]
    predictor = LatencyPredictor.fit(archs[:30], latencies[:30], device_fingerprint(), {})
    predicted = [predictor.predict(a) for a in archs[30:]]
    assert within(predicted, latencies[30:], 0.01) == 1.0
    predictor.save(tmp_path / "p.json")
    assert LatencyPredictor.load(tmp_path / "p.json").predict(archs[0]) == pytest.approx(predictor.predict(archs[0]))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PoseNASError, match="bad.json: not a latency predictor"):
        LatencyPredictor.load(tmp_path / "bad.json")


def test_latency_measure_cli(tmp_path, capsys):
    args = ["latency", "measure", "--space", "tiny", "--preset", "min", "--cache", str(tmp_path / "c.sqlite"),
            "--warmup", "1", "--repeats", "5", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not first["cached"] and second["cached"] and second["macs"] == first["macs"] > 0


def test_total_latency_adds_post_processing_for_a_stated_crowd_and_is_cached_apart(tmp_path, capsys):
    space = SearchSpace.load("tiny")
    arch = space.canonical(space.random(4))
    cache = LatencyCache(tmp_path / "latency.sqlite")
    network = LatencyMeter(LocalBackend(RuntimeSettings(**FAST)), cache).measure(arch)
    assert not network["cached"] and "postprocess_ms" not in network
    for people in (0, 20):
        total = LatencyMeter(LocalBackend(RuntimeSettings(**FAST, latency_of="total", people=people)), cache)
        first = total.measure(arch)
        assert not first["cached"] and first["people"] == people  # not served the network-only figure
        assert first["postprocess_ms"] == pytest.approx(first["in_graph_decode_ms"] + first["grouping_ms"])
        assert first["median_ms"] > first["grouping_ms"] > 0 and first["network_ms"] >= 0
        assert total.measure(arch)["cached"]
    assert len(cache) == 3
    assert main(["latency", "measure", "--space", "tiny", "--preset", "min", "--latency-of", "total", "--people",
                 "5", "--no-cache", "--warmup", "1", "--repeats", "5"]) == 0
    assert "grouping 5 people" in capsys.readouterr().out
    with pytest.raises(PoseNASError, match="--people 31"):
        RuntimeSettings(people=31)


def test_grouping_times_the_crowd_it_was_given():
    from nas.latency.postprocess import time_grouping

    assert time_grouping(17, 128, True, 7, 0, 3)["people_found"] == 7
    assert time_grouping(17, 128, False, 0, 0, 3)["people_found"] == 0
