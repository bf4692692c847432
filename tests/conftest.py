"""Shared fixtures: the real data beside the project, and small synthetic sets made once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FIXTURES = SHARED_DATA / "fixtures"
COCO_MINI = SHARED_DATA / "coco-mini"


def shared(path: Path) -> Path:
    """A path under ../shared/data, or a skip that says why."""
    if not path.exists():
        pytest.skip(f"real data not present: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """24 synthetic images at 160x160: a folder with annotations.json and images/."""
    from nas.synth import generate

    out = tmp_path_factory.mktemp("synth_small")
    generate(out, 24, seed=3, size=(160, 160), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_supernet(tmp_path_factory, synth_small) -> Path:
    """A briefly trained supernet of the tiny space: the path of its supernet.pt."""
    from nas.supernet_train import SupernetConfig, train_supernet

    out = tmp_path_factory.mktemp("tiny_supernet")
    cfg = SupernetConfig.from_dict({
        "train_ann": str(synth_small / "annotations.json"), "train_images": str(synth_small / "images"),
        "space": "tiny", "batch_size": 4, "workers": 0, "eval_archs": [],
        "phases": [{"name": "all", "epochs": 1, "elastic": ["resolution", "kernel", "depth", "width", "token"]}]})
    train_supernet(cfg, out, progress=False)
    return out / "supernet.pt"
