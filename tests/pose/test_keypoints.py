import json

import pytest

from nas.errors import PoseNASError
from nas.pose.keypoints import SPECS, detect_spec, get_spec
from tests.conftest import FIXTURES


@pytest.mark.parametrize("name", sorted(SPECS))
def test_flip_index_is_an_involution_that_swaps_sides(name):
    spec = SPECS[name]
    flip = spec.flip_index
    assert [flip[f] for f in flip] == list(range(spec.num_keypoints))
    for i, j in spec.flip_pairs:
        a, b = sorted((spec.keypoints[i], spec.keypoints[j]))
        assert a.startswith("left_") and b == "right_" + a[5:]
    assert len(spec.flip_pairs) >= 6


def test_crowdpose_has_head_and_neck_last():
    assert get_spec("crowdpose").keypoints[-2:] == ("head", "neck")
    assert get_spec("crowdpose").num_keypoints == get_spec("aic").num_keypoints == 14


def test_unknown_spec_is_a_clear_error():
    with pytest.raises(PoseNASError, match="unknown keypoint spec 'mpii'"):
        get_spec("mpii")


@pytest.mark.parametrize("fixture,expected", [
    ("coco/test_coco.json", "coco"), ("crowdpose/test_crowdpose.json", "crowdpose"),
    ("aic/test_aic.json", "aic"), ("ochuman/test_ochuman.json", "coco")])
def test_specs_are_detected_from_real_category_names(fixture, expected):
    data = json.loads((FIXTURES / fixture).read_text())
    assert detect_spec(data["categories"][0]["keypoints"]).name == expected
