"""The installed console script, as a user runs it: real processes, real exit codes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.app.cli import free_cores, main, use_free_cores
from search_spaces import SearchSpace
from search_spaces.presets import PUBLISHED
from supernet.cost import arch_cost

POSENAS = str(Path(sys.executable).with_name("posenas"))


def run(*args, cwd=None):
    return subprocess.run([POSENAS, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_console_script_round_trip(tmp_path):
    synth = run("data", "synth", "--out", str(tmp_path / "s"), "--images", "6", "--seed", "9", "--size", "96", "96")
    assert synth.returncode == 0, synth.stderr
    data = json.loads((tmp_path / "s" / "annotations.json").read_text())
    assert len(data["images"]) == 6 and len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 6
    gt = [{"image_id": a["image_id"], "keypoints": a["keypoints"], "score": 1.0}
          for a in data["annotations"] if a["num_keypoints"] > 0]
    (tmp_path / "r.json").write_text(json.dumps(gt))
    ev = run("eval", "--ann", str(tmp_path / "s" / "annotations.json"), "--results", str(tmp_path / "r.json"), "--json")
    assert ev.returncode == 0 and json.loads(ev.stdout.splitlines()[-1])["AP"] == pytest.approx(1.0)


def test_bad_input_exits_non_zero_with_one_line(tmp_path):
    (tmp_path / "broken.json").write_text("{")
    p = run("eval", "--ann", str(tmp_path / "broken.json"), "--results", str(tmp_path / "broken.json"))
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "broken.json: malformed JSON" in p.stderr
    assert "Traceback" not in p.stderr


def test_eval_needs_exactly_one_source(capsys, tmp_path):
    assert main(["eval", "--ann", str(tmp_path / "x.json")]) == 2
    assert "exactly one of --results" in capsys.readouterr().err


def test_eval_runs_a_checkpoint_on_images(tmp_path, synth_small, capsys):
    from nas.train.static import train
    from tests.train.test_train import _cfg

    train(_cfg(synth_small, epochs=1), tmp_path / "run", progress=False)
    out = tmp_path / "dets.json"
    assert main(["eval", "--ann", str(synth_small / "annotations.json"), "--checkpoint",
                 str(tmp_path / "run" / "checkpoint.pt"), "--save-results", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= metrics["AP"] <= 1.0
    assert isinstance(json.loads(out.read_text()), list)


def test_arch_sample_then_macs(tmp_path, capsys):
    from search_spaces import SearchSpace, read_arch
    from supernet.cost import arch_cost

    path = tmp_path / "xs.json"
    assert main(["arch", "sample", "--space", "cpu", "--preset", "litepose_xs", "--out", str(path)]) == 0
    space = SearchSpace.load("cpu")
    assert read_arch(path, space) == space.preset("litepose_xs")
    capsys.readouterr()
    assert main(["arch", "macs", "--space", "cpu", "--arch", str(path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["macs"] == arch_cost(space.preset("litepose_xs")).macs and row["resolution"] == 256
    assert main(["arch", "sample", "--space", "tiny", "--random", "--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out) == SearchSpace.load("tiny").random(4)
    tiny = SearchSpace.load("tiny")
    assert main(["arch", "sample", "--space", "tiny", "--preset", "litepose_xs", "--head", "query"]) == 0
    assert json.loads(capsys.readouterr().out) == tiny.with_head(tiny.preset("litepose_xs"), "query")


def test_arch_outside_the_space_is_one_line_naming_the_field(tmp_path):
    from search_spaces import SearchSpace

    config = SearchSpace.load("cpu").max()
    config["stages"][1]["branches"][1]["depth"] = 0
    (tmp_path / "a.json").write_text(json.dumps(config))
    p = run("arch", "macs", "--space", "cpu", "--arch", str(tmp_path / "a.json"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "a.json: stages[1].branches[1].depth = 0 is not allowed" in p.stderr


def test_augment_flag_overrides_the_config(tmp_path):
    from nas.app.cli import build_parser
    from nas.app.cli.flags import training_config
    from nas.train.static import TrainConfig

    def _train_config(args):
        return training_config(args, TrainConfig)


    (tmp_path / "cfg.yaml").write_text("augment: false\nepochs: 3\n")
    base = ["train", "--ann", "gt.json", "--images", "img", "--out", str(tmp_path / "run")]
    parse = build_parser().parse_args
    assert _train_config(parse(base)).augment is True, "on by default (real data)"
    assert _train_config(parse([*base, "--config", str(tmp_path / "cfg.yaml")])).augment is False
    assert _train_config(parse([*base, "--config", str(tmp_path / "cfg.yaml"), "--augment"])).augment is True
    assert _train_config(parse([*base, "--no-augment"])).augment is False


def test_the_default_space_holds_the_published_models_within_10_percent(capsys):
    """Each preset of the default space against the authors' own code (MACs and parameters by
    ptflops at the published input: ``PUBLISHED``), as ``arch presets`` prints it."""
    space = SearchSpace.load("default")
    for name, (model, size, gmacs, mparams) in PUBLISHED.items():
        cost = arch_cost(space.preset(name))
        assert space.preset(name)["resolution"] == size
        assert cost.macs / 1e9 == pytest.approx(gmacs, rel=0.10), model
        assert cost.params / 1e6 == pytest.approx(mparams, rel=0.10), model
    hrnet = space.preset("higherhrnet_w32")
    assert [s["block"] for s in hrnet["stages"]] == ["bottleneck", "basic", "basic", "basic"] and hrnet["stem"] == 64
    assert hrnet["head"]["style"] == "higherhrnet" and arch_cost(hrnet).macs / 1e9 == pytest.approx(46.2, rel=0.01)
    assert [s["modules"] for s in hrnet["stages"]] == [1, 1, 4, 3] and hrnet["widths"] == [32, 64, 128, 256]
    assert all(b["depth"] == 4 for s in hrnet["stages"] for b in s["branches"])
    assert space.validate(space.max()) and arch_cost(space.max()).macs > arch_cost(hrnet).macs
    assert main(["arch", "presets", "--space", "default"]) == 0
    lines = capsys.readouterr().out.splitlines()
    xs = lines.index(next(line for line in lines if line.startswith("litepose_xs")))
    assert "published LitePose-XS at 256 px: 0.886 GMACs, 1.68 M params; this preset there: 0.95x, 1.03x" \
        in lines[xs + 1]
    assert sum("published" in line for line in lines) == 5  # HigherHRNet-W32 and LitePose-XS/S/M/L
    assert not any("compact" in line for line in lines)
    assert main(["arch", "presets", "--space", "cpu"]) == 0  # the cpu space's presets say they are not the models
    assert "presets: compact: the published models' names on configs scaled" in capsys.readouterr().out



def test_torch_gets_the_cores_other_processes_leave_free():
    assert [free_cores(2, load) for load in (0.0, 0.4, 1.0, 1.6, 3.0)] == [2, 2, 1, 1, 1]
    assert free_cores(16, 3.2) == 13
    environ = {"OMP_NUM_THREADS": "3"}
    use_free_cores(environ)
    assert environ == {"OMP_NUM_THREADS": "3"}  # the user's word stands
    environ = {}
    use_free_cores(environ)
    assert 1 <= int(environ["OMP_NUM_THREADS"]) <= len(os.sched_getaffinity(0))


def test_the_command_line_sets_the_threads_before_torch_is_imported():
    """torch reads OMP_NUM_THREADS once, when it is imported: the CLI's modules must not import it
    (with a second thread on a core another process keeps busy, the main job ran 2x slower)."""
    import subprocess
    import sys

    code = "import sys, nas.app.cli; print(sorted({'torch', 'onnxruntime'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_bench_help_names_every_figure():
    from nas.app.bench import FIGURES
    from nas.app.cli.run import FIGURE_NAMES

    assert list(FIGURE_NAMES) == list(FIGURES)
