"""The evaluations searches keep: one per subnet and evaluation, read back checked, and a damaged
or hostile cache is one line naming it."""
import sqlite3

import pytest

from nas.errors import PoseNASError
from nas.search.evaluations import Evaluations
from search_spaces import SearchSpace

KEY = {"supernet": "abc", "val_data": "def", "eval_images": 4, "calibration": {"data": None}, "flip_test": False}


def test_an_evaluation_is_kept_per_subnet_and_evaluation_key(tmp_path):
    space = SearchSpace.load("tiny")
    small, large = space.min(), space.max()
    kept = Evaluations(KEY, tmp_path)
    assert kept.get(small) is None and kept.all(space) == ([], [])
    kept.put(small, {"AP": 0.25, "AP50": 0.5})
    kept.put(large, {"AP": float("nan")})  # nobody found: kept as such
    kept.put(small, {"AP": 0.3, "AP50": 0.6})  # evaluated again: the newer replaces it
    again = Evaluations(KEY, tmp_path)  # another search, another process: the same table
    assert again.get(small) == {"AP": 0.3, "AP50": 0.6}
    archs, aps = again.all(space)
    assert sorted(aps) == [0.0, 0.3] and small in archs and large in archs
    other = Evaluations({**KEY, "eval_images": 8}, tmp_path)  # scored on other images: not comparable
    assert other.get(small) is None and other.all(space) == ([], [])


@pytest.mark.parametrize("arch,metrics,message", [
    ('{"resolution": 1}', '{"AP": 0.3}', "damaged evaluation"),
    (None, '{"AP": 7}', "AP 7"),
    (None, '{"AP50": 0.3}', "KeyError"),
    (None, "not json", "damaged evaluation"),
])
def test_a_hostile_row_is_one_line_naming_the_cache(tmp_path, arch, metrics, message):
    space = SearchSpace.load("tiny")
    kept = Evaluations(KEY, tmp_path)
    kept.put(space.min(), {"AP": 0.3})
    with sqlite3.connect(tmp_path / "evaluations.db") as db:
        db.execute("UPDATE evaluations SET arch = coalesce(?, arch), metrics = ?", (arch, metrics))
    with pytest.raises(PoseNASError, match=message) as error:
        kept.all(space)
    assert str(tmp_path / "evaluations.db") in str(error.value)
    if arch is None:
        with pytest.raises(PoseNASError, match=message):
            kept.get(space.min())


def test_a_damaged_cache_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "evaluations.db").write_bytes(b"\x00not sqlite" * 100)
    with pytest.raises(PoseNASError, match="not a readable evaluation cache") as error:
        Evaluations(KEY, tmp_path)
    assert str(tmp_path / "evaluations.db") in str(error.value)
