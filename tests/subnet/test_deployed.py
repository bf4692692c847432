"""The decoding that lives in the exported graph: onnxruntime's candidates equal torch's, and the
people grouped from them equal the torch decoder's, on real COCO people."""
import numpy as np
import pytest
import torch

from nas.pose.codecs.ae import CODEC as AE
from nas.pose.codecs.ae import candidates_difference
from nas.pose.dataset import CocoPoseDataset
from nas.pose.decode import Candidates, DecodeConfig, candidates, divide_heatmaps, nms_radius
from nas.pose.inference import decode_batch, people_from_deployed
from nas.pose.targets import oracle_outputs
from nas.pose.transforms import letterbox_matrix, warp_keypoints
from nas.subnet.onnx import decoding_onnx, session
from tests.conftest import COCO_MINI


@pytest.mark.parametrize("size,strides", [(256, (4, 2)), (512, (4,))])
def test_graph_candidates_and_people_equal_the_torch_decoders_on_coco_mini(size, strides):
    ds = CocoPoseDataset(COCO_MINI / "annotations" / "person_keypoints_val.json", COCO_MINI / "images")
    graph = session(decoding_onnx(AE, 17, size, len(strides) == 2))
    names = [i.name for i in graph.get_inputs()]
    checked = 0
    for image_id in ds.image_ids[:12]:
        kps, _ = ds.people(image_id)
        if len(kps) == 0:
            continue
        info = ds.coco.imgs[image_id]
        matrix = letterbox_matrix(info["width"], info["height"], size)
        outputs = oracle_outputs(warp_keypoints(kps, matrix, size), size, 17, strides)
        divided = divide_heatmaps(outputs, 17)
        got = graph.run(None, dict(zip(names, [o.numpy() for o in divided])))
        expected = [t.numpy() for t in Candidates(17, strides[-1])(*divided)]
        radius = nms_radius(DecodeConfig(), strides[-1])
        assert candidates_difference(got, expected, radius) <= 1e-5
        (ref, ref_scores), = decode_batch(AE, outputs, [matrix], size, ds.spec)
        people, scores = people_from_deployed(AE, got, matrix, size, ds.spec)
        assert people.shape == ref.shape
        assert np.abs(ordered(people, scores) - ordered(ref, ref_scores)).max() <= 1e-3
        assert np.abs(np.sort(scores) - np.sort(ref_scores)).max() <= 1e-5
        checked += len(ref)
    assert checked >= 10


def test_candidates_compare_blind_to_ties_but_not_to_misplaced_or_missing_peaks():
    """Maps with many equal values (ties everywhere, as an untrained network's flat heatmaps have)
    and the same maps off by 1e-6: top-k keeps other peaks of each tie, yet they compare equal;
    a candidate moved off its peak, or the strongest peak lost, does not."""
    generator = torch.Generator().manual_seed(0)
    heat = torch.round(torch.rand(1, 17, 32, 32, generator=generator) * 20) / 100  # 21 levels
    tags = torch.randn(1, 17, 16, 16, 1, generator=generator)
    near = heat + 1e-6 * torch.rand(heat.shape, generator=generator)
    expected, got = ([h.numpy(), tags[..., 0].numpy(), *(t.squeeze(-1).numpy() for t in candidates(h, tags, 1, 30))]
                     for h in (heat, near))
    assert not np.array_equal(got[2][..., :2], expected[2][..., :2])  # ties broken otherwise
    assert candidates_difference(got, expected, 1) <= 1e-5

    moved = [o.copy() for o in got]
    moved[2][0, 3, 0, 0] = (moved[2][0, 3, 0, 0] + 5) % 32
    lost = [o.copy() for o in got]
    lost[2][0, 3, :-1], lost[2][0, 3, -1] = got[2][0, 3, 1:], 0
    for broken in (moved, lost):
        assert candidates_difference(broken, expected, 1) >= 0.01


def ordered(people: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """People in one order (score, then mean x): equal scores may come in either order."""
    return people[np.lexsort((people[:, :, 0].mean(1), -np.round(scores, 5)))]
