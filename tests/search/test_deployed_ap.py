"""A subnet's AP as its target runs it: the deployed fp32 model scores what torch does, and a
search under an int8 target weighs the quantized model's measured AP, kept beside torch's."""
import json
from dataclasses import replace

import pandas as pd
import pytest

from nas.errors import PoseNASError
from nas.latency.meter import LatencyCache, LatencyMeter, LocalBackend
from nas.pose.dataset import CocoPoseDataset
from nas.pose.synth import synthetic_set
from nas.search.deployed import deployed_metrics
from nas.search.study import run_search
from nas.subnet.inherit import TrainedSupernet
from tests.search.test_search import FAST, config


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    """24 synthetic images of the shipped supernet's validation recipe."""
    folder = tmp_path_factory.mktemp("val")
    synthetic_set(folder, 24, 2)
    return folder


def test_the_deployed_model_scores_what_torch_does_and_int8_its_own(val):
    supernet = TrainedSupernet.load("zoo:cpu-synth", calibration_images=16)
    dataset = CocoPoseDataset(str(val / "annotations.json"), str(val / "images"), supernet.spec)
    arch = supernet.space.resolve("litepose_xs")
    inherited = supernet.evaluate(arch, dataset)
    fp32 = deployed_metrics(supernet, arch, dataset, FAST)
    assert inherited["AP"] > 0.2 and fp32["AP"] == pytest.approx(inherited["AP"], abs=1e-3)
    int8 = deployed_metrics(supernet, arch, dataset, replace(FAST, precision="int8"))
    assert int8 != fp32 and abs(int8["AP"] - fp32["AP"]) < 0.05  # quantized, and close


@pytest.mark.slow  # a search whose every trial is quantized and evaluated twice
def test_an_int8_search_weighs_the_quantized_models_ap(tmp_path, val):
    int8 = LatencyMeter(LocalBackend(replace(FAST, precision="int8")), LatencyCache(tmp_path / "latency.sqlite"))
    cfg = config(tmp_path, "zoo:cpu-synth", val, trials=2, eval_images=12, calib_images=16)
    run_search(cfg, int8, progress=False)
    trials = pd.read_csv(tmp_path / "search" / "trials.csv")
    evaluated = trials[trials["evaluated"]]
    assert len(evaluated) >= 1 and (evaluated["inherited_AP"] > 0).all()
    assert (evaluated["AP"] != evaluated["inherited_AP"]).any(), "the int8 model's own AP, not torch's"
    supernet = TrainedSupernet.load("zoo:cpu-synth", calibration_images=16)
    dataset = CocoPoseDataset(str(val / "annotations.json"), str(val / "images"), supernet.spec)
    for _, row in evaluated.iterrows():  # the AP searched on is the int8 model's, measured in onnxruntime
        arch = json.loads(row["arch"])
        assert row["AP"] == pytest.approx(deployed_metrics(supernet, arch, dataset, int8.settings, 12)["AP"], abs=1e-9)
        assert row["inherited_AP"] == pytest.approx(supernet.evaluate(arch, dataset, limit=12)["AP"], abs=1e-9)
    with pytest.raises(PoseNASError, match="target onnxruntime/int8/1: its AP is measured as deployed, without flip"):
        run_search(replace(cfg, flip_test=True, out=str(tmp_path / "flip")), int8, progress=False)
