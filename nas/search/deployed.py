"""A subnet's AP as its deployment target runs it. Where the target's precision changes what the
network computes (int8), torch's inherited AP is not the deployed one: the subnet is exported
with its inherited weights, quantized on the images its BN statistics were recalibrated on, and
run in the target's runtime on the validation images, through the same decoding and COCO scoring.
"""
from __future__ import annotations

from nas.errors import PoseNASError
from nas.latency.runtimes import runtime_of
from nas.latency.settings import RuntimeSettings
from nas.pose.codecs import codec_of
from nas.pose.dataset import CocoPoseDataset
from nas.pose.evaluate import evaluate_deployed
from nas.subnet.inherit import TrainedSupernet
from nas.subnet.onnx import to_onnx
from nas.subnet.precision import precision_of


def deployed_metrics(supernet: TrainedSupernet, arch: dict, dataset: CocoPoseDataset, settings: RuntimeSettings,
                     limit: int | None = None) -> dict[str, float]:
    """COCO metrics of the inherited subnet ``arch`` deployed on ``settings``' target."""
    resolution = arch["resolution"]
    net = supernet.inherit(arch)
    model = precision_of(settings.precision).apply(to_onnx(net, resolution), supernet.calibration.inputs(resolution))
    run = runtime_of(settings).inference(model, settings)
    return evaluate_deployed(run, codec_of(arch), dataset, resolution, limit)[0]


def measured_as_deployed(settings: RuntimeSettings, flip_test: bool) -> bool:
    """Whether the target's AP is measured as deployed (its precision changes what the network
    computes); a deployed model runs without flip test, so asking for it there is refused."""
    if precision_of(settings.precision).exact:
        return False
    if flip_test:
        raise PoseNASError(f"target {settings.target}: its AP is measured as deployed, without flip test; drop "
                           f"--flip-test")
    return True


def target_metrics(supernet: TrainedSupernet, arch: dict, dataset: CocoPoseDataset, settings: RuntimeSettings,
                   flip_test: bool = False, limit: int | None = None) -> dict[str, float]:
    """COCO metrics of ``arch`` as the target runs it: torch's inherited ones where they are the same."""
    if measured_as_deployed(settings, flip_test):
        return deployed_metrics(supernet, arch, dataset, settings, limit)
    return supernet.evaluate(arch, dataset, flip_test, limit)
