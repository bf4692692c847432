"""Shared fixtures: the small real sets in tests/data, and small synthetic sets made once per session."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

# One intra-op thread for torch here and in every process the tests start: the test networks are
# tiny, so a second thread only adds synchronisation (one thread is faster even on an idle machine),
# and where another process keeps a core busy each op would wait for it (12x slower, measured).
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402

torch.set_num_threads(1)

DATA = Path(__file__).resolve().parent / "data"  # small real sets (data/README.md)
FIXTURES = DATA / "fixtures"
COCO_MINI = DATA / "coco-mini"


@contextmanager
def held_elsewhere(folder: Path):
    """``folder`` locked by another process (as a job writing it) until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from nas.io import writer_lock\n"
                               f"with writer_lock({str(folder)!r}): sys.stdin.read()"], stdin=subprocess.PIPE)
    lock = folder.parent / f".{folder.name}.lock"
    while f"pid {holder.pid}" not in (lock.read_text() if lock.exists() else ""):
        assert holder.poll() is None, "the lock holder ended"
        time.sleep(0.05)
    try:
        yield holder.pid
    finally:
        holder.communicate(b"")


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The user's cache folder (latency calibrations, regenerated images) of this test session
    only, shared by the posenas processes the tests start."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSENAS_CACHE", str(tmp_path_factory.mktemp("user-cache")))
        yield


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """24 synthetic images at 160x160: a folder with annotations.json and images/."""
    from nas.pose.synth import generate

    out = tmp_path_factory.mktemp("synth_small")
    generate(out, 24, seed=3, size=(160, 160), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_supernet(tmp_path_factory, synth_small) -> Path:
    """A briefly trained supernet of the tiny space: the path of its supernet.pt."""
    from nas.train.supernet import SupernetConfig, train_supernet

    out = tmp_path_factory.mktemp("tiny_supernet")
    cfg = SupernetConfig.from_dict({
        "train_ann": str(synth_small / "annotations.json"), "train_images": str(synth_small / "images"),
        "space": "tiny", "batch_size": 4, "workers": 0, "eval_archs": [], "sandwich_random": 0,
        "phases": [{"name": "all", "epochs": 1, "elastic": ["resolution", "kernel", "depth", "width", "token"]}]})
    train_supernet(cfg, out, progress=False)
    return out / "supernet.pt"


TINY_ZOO = {
    "name": "tiny-synth", "space": "tiny",
    "data": {"train_images": 12, "val_images": 4, "size": [96, 96], "train_seed": 5, "val_seed": 6},
    "supernet": {"batch_size": 4, "workers": 0, "eval_archs": [], "sandwich_random": 0, "augment": False,
                 "phases": [{"name": "all", "epochs": 1,
                             "elastic": ["resolution", "kernel", "depth", "width", "token"]}]},
}


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """A zoo entry of the tiny space made by `posenas zoo build` (root/entry; its run in root/run,
    its regenerated images in root/cache)."""
    from nas.app.cli import main

    root = tmp_path_factory.mktemp("zoo")
    (root / "tiny-zoo.yaml").write_text(yaml.safe_dump(TINY_ZOO))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSENAS_CACHE", str(root / "cache"))
        assert main(["zoo", "build", str(root / "tiny-zoo.yaml"), "--out", str(root / "run"),
                     "--into", str(root / "entry"), "--predictor-samples", "10", "--standalone", "0"]) == 0
    return root


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return versions[-1] if versions else None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A throwaway PostgreSQL server on loopback (a real server process, stopped at the end);
    skipped where PostgreSQL is not installed (`.ci/run` installs Debian's package)."""
    pg = _postgres_bin()
    if pg is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    root = Path(tempfile.mkdtemp(prefix="posenas-pg-"))  # not under pytest's root-only folder
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's user
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*prefix, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "posenas"], check=True,
                   capture_output=True)
    subprocess.run([*prefix, str(pg / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100", "start"],
                   check=True, capture_output=True)
    yield f"postgresql://posenas@127.0.0.1:{port}/postgres"
    subprocess.run([*prefix, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
