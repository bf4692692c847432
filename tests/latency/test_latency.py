"""Latency: onnxruntime and torch backends, the persistent cache, the predictor (the server: test_server)."""
import json

import numpy as np
import pytest

from nas.app.cli import main
from nas.errors import PoseNASError
from nas.latency.adaptation import adapted_reference
from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend, device_fingerprint
from nas.latency.predictor import LatencyPredictor, feature_vector, within
from nas.latency.settings import RuntimeSettings
from search_spaces import SearchSpace

FAST = dict(warmup=1, repeats=5)
NETWORK = dict(FAST, latency_of="network")  # quicker where what is measured does not matter


def test_onnxruntime_and_torch_backends_report_median_p90_and_spread():
    arch = SearchSpace.load("tiny").resolve("litepose_xs")
    for backend in ("onnxruntime", "torch"):
        figures = LocalBackend(RuntimeSettings(backend=backend, latency_of="network", **FAST)).measure(arch)
        assert 0 < figures["median_ms"] <= figures["p90_ms"] and figures["spread"] >= 1.0
        assert figures["runs"] == 5 and figures["network_ms"] == figures["median_ms"]


def test_cache_measures_a_config_once_per_device_and_settings(tmp_path):
    space = SearchSpace.load("tiny")
    arch = space.min()
    meter = LatencyMeter(LocalBackend(RuntimeSettings(**NETWORK)), LatencyCache(tmp_path / "lat.sqlite"))
    first, second = meter.measure(arch), meter.measure(arch)
    assert not first["cached"] and second["cached"] and first["median_ms"] == second["median_ms"]
    reopened = LatencyMeter(LocalBackend(RuntimeSettings(**NETWORK)), LatencyCache(tmp_path / "lat.sqlite"))
    assert reopened.measure(arch)["cached"], "a new process finds the measurement"
    other = LatencyMeter(LocalBackend(RuntimeSettings(threads=2, **NETWORK)), LatencyCache(tmp_path / "lat.sqlite"))
    assert not other.measure(arch)["cached"], "other runtime settings are another measurement"
    assert not meter.measure(space.resolve("litepose_xs"))["cached"]
    assert len(LatencyCache(tmp_path / "lat.sqlite")) == 3


def test_bad_runtime_settings_are_named():
    with pytest.raises(PoseNASError, match="optimization 'fast' unknown"):
        RuntimeSettings(optimization="fast")
    with pytest.raises(PoseNASError, match="target runtime 'tflite' unknown"):
        LocalBackend(RuntimeSettings(backend="tflite"))
    with pytest.raises(PoseNASError, match="give --latency-of network"):
        LocalBackend(RuntimeSettings(backend="torch"))  # eager torch times no post-processing: not a total


def test_predictor_recovers_a_linear_cost_model_and_round_trips(tmp_path):
    space = SearchSpace.load("cpu")
    archs = [space.random(s) for s in range(40)]
    # intercept, stride-2 head, then the costs in FEATURES order
    truth = np.array([0.3, 0.4, 0.004, 0.02, 0.03, 0.01, 0.016, 0.003, 0.002, 0.05, 0.03, 0.001, 0.002, 0.01])
    latencies = [float(feature_vector(a) @ truth) for a in archs]
    predictor = LatencyPredictor.fit(archs[:30], latencies[:30], device_fingerprint(), {}, p90_over_median=1.25)
    predicted = [predictor.predict(a) for a in archs[30:]]
    assert within(predicted, latencies[30:], 0.01) == 1.0
    predictor.save(tmp_path / "p.json")
    again = LatencyPredictor.load(tmp_path / "p.json")
    assert again.predict(archs[0]) == pytest.approx(predictor.predict(archs[0]))
    assert again.predict(archs[0], "p90_ms") == pytest.approx(1.25 * predictor.predict(archs[0]))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PoseNASError, match="bad.json: not a latency predictor"):
        LatencyPredictor.load(tmp_path / "bad.json")
    stored = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "tail.json").write_text(json.dumps({**stored, "p90_over_median": 0.5}))
    with pytest.raises(PoseNASError, match="tail.json: p90_over_median 0.5 is not a ratio"):
        LatencyPredictor.load(tmp_path / "tail.json")


def test_total_latency_model_adds_the_measured_post_processing_of_each_resolution_and_head(tmp_path):
    space = SearchSpace.load("tiny")
    meter = LatencyMeter(LocalBackend(RuntimeSettings(**FAST, people=3)), LatencyCache(tmp_path / "lat.sqlite"))
    model = adapted_reference(meter, space, anchors=4, progress=False)  # one per post-processing case
    heads = space.spec["head"]["multi_resolution"]
    assert len(model.postprocess_ms) == len(space.spec["resolution"]) * len(heads) > 1
    assert model.settings["latency_of"] == "total" and model.settings["people"] == 3
    arch = space.canonical(space.resolve("litepose_xs"))
    figures = meter.measure(arch)  # the post-processing of its shape was timed once in this process, by an anchor
    assert model.predict(arch) == pytest.approx(model.network(arch) + figures["postprocess_ms"])
    model.save(tmp_path / "total.json")
    again = LatencyPredictor.load(tmp_path / "total.json")
    assert again.predict(arch) == pytest.approx(model.predict(arch))
    assert again.predict(arch) > again.network(arch)
    arch["resolution"] = 320
    with pytest.raises(PoseNASError, match="no post-processing measured for 320px"):
        again.predict(arch)


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
    arch = space.with_head(space.random(4), "ae")
    cache = LatencyCache(tmp_path / "latency.sqlite")
    network = LatencyMeter(LocalBackend(RuntimeSettings(**FAST, latency_of="network")), cache).measure(arch)
    assert not network["cached"] and "postprocess_ms" not in network
    for people in (0, 20):
        total = LatencyMeter(LocalBackend(RuntimeSettings(**FAST, people=people)), cache)  # total: the default
        first = total.measure(arch)
        assert not first["cached"] and first["people"] == people  # not served the network-only figure
        assert first["postprocess_ms"] == pytest.approx(first["in_graph_decode_ms"] + first["grouping_ms"])
        assert first["median_ms"] > first["grouping_ms"] > 0 and first["network_ms"] >= 0
        assert total.measure(arch)["cached"]
    assert len(cache) == 3
    query = LatencyMeter(LocalBackend(RuntimeSettings(**FAST))).measure(space.with_head(arch, "query"))
    assert query["postprocess_ms"] == query["grouping_ms"] == 0 and query["network_ms"] == query["median_ms"] > 0
    assert main(["latency", "measure", "--space", "tiny", "--preset", "min", "--latency-of", "total", "--people",
                 "5", "--no-cache", "--warmup", "1", "--repeats", "5"]) == 0
    assert "grouping 5 people" in capsys.readouterr().out
    with pytest.raises(PoseNASError, match="--people 31"):
        RuntimeSettings(people=31)


def test_grouping_times_the_crowd_it_was_given():
    from nas.pose.codecs.ae import CODEC as AE
    from nas.pose.codecs.query import CODEC as QUERY
    from nas.pose.crowd import crowd

    assert len(AE.after_graph(17, 128, True, 7)()[0]) == 7
    assert len(AE.after_graph(17, 128, False, 0)()[0]) == 0
    assert QUERY.after_graph(17, 128, False, 7) is None, "people come out of the query head's graph"
    assert 0 < (crowd(20, 256, 17)[..., 2] == 0).mean() < 0.4, "some joints hidden, so that refinement is timed"


def test_timing_against_the_calibrated_reference(tmp_path, capsys):
    from nas.latency.stopwatch import CALIBRATIONS, Stopwatch

    settings = RuntimeSettings(**FAST)
    watch = Stopwatch(settings, "device-a", tmp_path)
    calibrations = json.loads((tmp_path / CALIBRATIONS).read_text())
    (entry,) = calibrations.values()
    assert entry["reference_ms"] == watch.reference_ms > 0 and "load" in entry
    again = Stopwatch(settings, "device-a", tmp_path)
    assert again.reference_ms == watch.reference_ms, "calibrated once per device: every process scales alike"
    Stopwatch(settings, "device-b", tmp_path)
    assert len(json.loads((tmp_path / CALIBRATIONS).read_text())) == 2
    figures = watch.time(lambda: sum(range(2000)))
    assert 0 < figures["median_ms"] <= figures["p90_ms"], "the rounds' fastest, on the basis p90 is on"
    assert figures["runs"] == 5 and figures["load"] >= 0
    assert "busy" not in capsys.readouterr().err or figures["slowdown"] > 1.5
    calibrations = {k: {**v, "reference_ms": v["reference_ms"] / 100} for k, v in calibrations.items()}
    (tmp_path / CALIBRATIONS).write_text(json.dumps(calibrations))  # as if calibrated on a 100x faster day
    busy = Stopwatch(settings, "device-a", tmp_path, pause=lambda seconds: None)  # taken again at once
    scaled = busy.time(lambda: sum(range(2000)))
    assert scaled["slowdown"] > 10 and scaled["median_ms"] < scaled["raw_median_ms"] / 10, "scaled by the reference"
    assert busy.time(lambda: None)["slowdown"] > 1.5
    assert capsys.readouterr().err.count("warning: the machine is busy") == 1, "warned once"
    alone = Stopwatch(RuntimeSettings(reference=False, **FAST), "device-a", tmp_path).time(lambda: None)
    assert "slowdown" not in alone and alone["runs"] == 5
    assert RuntimeSettings().key() != RuntimeSettings(reference=False).key()


def test_a_measurement_the_machine_slowed_is_taken_again_and_the_least_slowed_kept(tmp_path, capsys):
    """On an injected clock: the reference runs 2x its calibrated time while the machine is busy
    (the measured call too), 1x once a pause let the burst pass."""
    from nas.latency.stopwatch import ATTEMPTS, PAUSE_S, Stopwatch

    class Machine:
        def __init__(self, busy_pauses: int):
            self.now, self.pauses, self.busy_pauses = 0.0, [], busy_pauses

        def pause(self, seconds: float) -> None:
            self.pauses.append(seconds)

        def runs(self, ms: float):
            def run():
                self.now += ms / 1000 * (2 if len(self.pauses) < self.busy_pauses else 1)
            return run

    for busy_pauses, attempts in ((1, 2), (ATTEMPTS, ATTEMPTS)):
        machine = Machine(busy_pauses)
        watch = Stopwatch(RuntimeSettings(**FAST), "device-a", tmp_path, clock=lambda: machine.now, pause=machine.pause)
        watch.reference, watch.reference_ms = machine.runs(1.0), 1.0
        figures = watch.time(machine.runs(3.0))
        assert figures["attempts"] == attempts and machine.pauses == [PAUSE_S] * (attempts - 1)
        assert figures["median_ms"] == pytest.approx(3.0)  # scaled right either way; kept: the least slowed
        assert figures["slowdown"] == pytest.approx(1.0 if busy_pauses < ATTEMPTS else 2.0)
    assert capsys.readouterr().err.count("warning: the machine is busy") == 1, "busy throughout: warned"


def test_latency_adapt_writes_a_model_the_search_reads(tmp_path, capsys):
    out = tmp_path / "adapted.json"
    assert main(["latency", "adapt", "--space", "tiny", "--anchors", "3", "--latency-of", "network", "--warmup", "1",
                 "--repeats", "5", "--no-cache", "--out", str(out)]) == 0
    model = LatencyPredictor.load(out)
    assert model.settings["adaptation"]["anchors"] == 3 and model.settings["latency_of"] == "network"
    assert "from 3 subnets measured in" in capsys.readouterr().out
    assert model.predict(SearchSpace.load("tiny").max()) > model.predict(SearchSpace.load("tiny").min()) > 0
