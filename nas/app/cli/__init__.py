"""The `posenas` command line. Every user error ends as one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nas.errors import PoseNASError
from search_spaces import SpaceError


def _data_paths(args: argparse.Namespace, prefix: str = "") -> tuple[str, str]:
    """``--data DIR`` (a synthetic set: DIR/annotations.json + DIR/images) or ``--ann`` + ``--images``."""
    data, ann, images = (getattr(args, prefix + n) for n in ("data", "ann", "images"))
    if data:
        return str(Path(data) / "annotations.json"), str(Path(data) / "images")
    if not ann:
        raise PoseNASError(f"give --{prefix.replace('_', '-')}data DIR or --{prefix.replace('_', '-')}ann GT.json")
    return ann, images


def _print_json_last(obj: dict) -> None:
    print(json.dumps(obj))


def cmd_synth(args: argparse.Namespace) -> None:
    from nas.pose.synth import generate

    path = generate(args.out, args.images, args.seed, tuple(args.size))
    print(f"wrote {args.images} images and {path}")


def cmd_check(args: argparse.Namespace) -> None:
    from nas.pose.dataset import CocoPoseDataset
    from nas.pose.datacheck import oracle_ap, summarize
    from nas.pose.evaluate import format_metrics, metrics_json

    ds = CocoPoseDataset(args.ann, args.images, args.spec)
    for image_id in ds.image_ids:  # every image must exist and decode
        ds.load_image(image_id)
    summary = summarize(ds)
    for key, value in summary.items():
        print(f"{key}: {value}")
    if args.oracle:
        metrics = oracle_ap(ds, args.resolution, progress=not args.json)
        print(f"oracle at {args.resolution}: {format_metrics(metrics)}")
        summary["oracle"] = {"resolution": args.resolution, **metrics_json(metrics)}
    if args.json:
        _print_json_last(summary)


def cmd_eval(args: argparse.Namespace) -> None:
    from nas.pose.dataset import CocoPoseDataset, load_annotations
    from nas.pose.evaluate import evaluate, format_metrics, load_results, metrics_json
    from nas.io import write_json

    if bool(args.results) == bool(args.checkpoint):
        raise PoseNASError("give exactly one of --results RESULTS.json or --checkpoint CKPT")
    if args.results:
        gt, spec, _ = load_annotations(args.ann, args.spec)
        metrics = evaluate(gt, load_results(args.results, gt, spec), spec)
    else:
        from nas.subnet.export import load_network
        from nas.train.static import evaluate_network

        net, arch, spec = load_network(args.checkpoint)
        ds = CocoPoseDataset(args.ann, args.images, args.spec or spec)
        metrics, results = evaluate_network(net, ds, args.size or arch["resolution"], args.flip_test, progress=True)
        if args.save_results:
            write_json(args.save_results, results)
    print(format_metrics(metrics))
    if args.json:
        _print_json_last(metrics_json(metrics))


def _train_config(args: argparse.Namespace, kind=None, base: dict | None = None):
    """Training settings from ``base``, then the --config YAML, then the flags given."""
    from nas.io import read_yaml
    from nas.train.static import TrainConfig

    kind = kind or TrainConfig
    settings = {**(base or {}), **(read_yaml(args.config, "config file") if args.config else {})}
    if args.data or args.ann:
        settings["train_ann"], settings["train_images"] = _data_paths(args)
    if args.val_data or args.val_ann:
        settings["val_ann"], settings["val_images"] = _data_paths(args, "val_")
    for name in ("epochs", "batch_size", "space", "arch", "lr", "workers", "seed", "time_budget_min", "device", "spec",
                 "augment"):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if "train_ann" not in settings:
        raise PoseNASError("no training data: give --data DIR, --ann GT.json, or train_ann in --config")
    return kind.from_dict(settings, str(args.config or "command line"))


def cmd_train(args: argparse.Namespace) -> None:
    from nas.pose.evaluate import format_metrics
    from nas.train.static import train

    metrics = train(_train_config(args), args.out)
    print(f"checkpoint: {Path(args.out) / 'checkpoint.pt'}")
    if metrics:
        print(format_metrics(metrics))


def cmd_train_supernet(args: argparse.Namespace) -> None:
    from nas.train.supernet import CHECKPOINT, SupernetConfig, train_supernet

    train_supernet(_train_config(args, SupernetConfig), args.out)
    print(f"supernet: {Path(args.out) / CHECKPOINT}")


def cmd_eval_subnet(args: argparse.Namespace) -> None:
    from nas.subnet.calibration import CalibrationSet
    from nas.pose.dataset import CocoPoseDataset
    from nas.pose.evaluate import format_metrics, metrics_json
    from nas.subnet.inherit import supernet_data, evaluate_subnet, load_supernet

    supernet, space, ckpt = load_supernet(args.supernet)
    arch = space.resolve(args.arch)
    ann, images = _data_paths(args)
    spec = ckpt["spec"]
    calibration = CalibrationSet(CocoPoseDataset(*supernet_data(ckpt, args.calib_data), spec), args.calib_images)
    metrics = evaluate_subnet(supernet, arch, calibration, CocoPoseDataset(ann, images, spec), args.flip_test, args.limit)
    print(f"{args.arch}: {format_metrics(metrics)}")
    if args.json:
        _print_json_last(metrics_json(metrics))


def cmd_predict(args: argparse.Namespace) -> None:
    import cv2

    from nas.pose.draw import draw_people
    from nas.subnet.export import load_network
    from nas.pose.inference import detect
    from nas.pose.keypoints import get_spec

    net, arch, spec_name = load_network(args.checkpoint)
    spec = get_spec(spec_name)
    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        raise PoseNASError(f"{args.image}: not found or not a readable image")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    (kps, scores), = detect(net, [rgb], args.size or arch["resolution"], spec, args.flip_test)
    keep = scores >= args.threshold
    drawn = draw_people(rgb, kps[keep], spec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
        raise PoseNASError(f"{out}: could not write the image (unknown extension?)")
    print(f"{int(keep.sum())} people drawn on {out}")


def _arch(args: argparse.Namespace):
    """The space and the arch config named by ``--arch FILE``, ``--preset NAME`` or ``--random``."""
    from search_spaces import SearchSpace, read_arch

    space = SearchSpace.load(args.space)
    chosen = [bool(getattr(args, "arch", None)), bool(args.preset), bool(getattr(args, "random", False))]
    if sum(chosen) != 1:
        raise PoseNASError("give exactly one of " + ", ".join(
            n for n in ("--arch ARCH.json", "--preset NAME", "--random") if hasattr(args, n[2:].split()[0])))
    if getattr(args, "arch", None):
        return space, read_arch(args.arch, space)
    if args.preset:
        return space, space.preset(args.preset)
    return space, space.random(args.seed)


def _cost_row(arch: dict, keypoints: int) -> dict:
    from search_spaces import arch_hash
    from supernet.cost import arch_cost

    cost = arch_cost(arch, keypoints)
    return {"resolution": arch["resolution"], "macs": cost.macs, "params": cost.params, "arch_hash": arch_hash(arch)}


def cmd_arch_macs(args: argparse.Namespace) -> None:
    _, arch = _arch(args)
    row = _cost_row(arch, args.keypoints)
    print(f"{row['macs'] / 1e9:.3f} GMACs, {row['params'] / 1e6:.3f} M params at {row['resolution']} px "
          f"(arch {row['arch_hash']})")
    if args.json:
        _print_json_last(row)


def cmd_arch_sample(args: argparse.Namespace) -> None:
    from search_spaces import write_arch

    _, arch = _arch(args)
    if args.out:
        write_arch(args.out, arch)
        print(f"wrote {args.out}")
    else:
        print(json.dumps(arch, indent=1))


def cmd_arch_presets(args: argparse.Namespace) -> None:
    from search_spaces import SearchSpace

    space = SearchSpace.load(args.space)
    print(space.describe())
    for name in space.preset_names():
        row = _cost_row(space.preset(name), args.keypoints)
        print(f"{name:16s} {row['resolution']:4d} px {row['macs'] / 1e9:8.3f} GMACs {row['params'] / 1e6:7.3f} M params")


def _meter(args: argparse.Namespace):
    from nas.latency.meter import RuntimeSettings, make_meter

    settings = RuntimeSettings(backend=args.backend, threads=args.threads, optimization=args.optimization,
                               warmup=args.warmup, repeats=args.repeats)
    return make_meter(settings, args.url, None if args.no_cache else args.cache)


def cmd_latency_measure(args: argparse.Namespace) -> None:
    space, arch = _arch(args)
    figures = _meter(args).measure(space.canonical(arch), args.keypoints)
    label = "torch eager (not a deployment latency)" if args.backend == "torch" else "onnxruntime"
    print(f"{label}: median {figures['median_ms']:.2f} ms, p90 {figures['p90_ms']:.2f} ms, spread "
          f"{figures['spread']:.2f} ({'cached' if figures['cached'] else 'measured'}, {args.threads} threads)")
    if args.json:
        _print_json_last({**figures, "backend": args.backend, **_cost_row(arch, args.keypoints)})


def cmd_latency_predictor(args: argparse.Namespace) -> None:
    from nas.latency.predictor import build_predictor
    from search_spaces import SearchSpace

    report = build_predictor(SearchSpace.load(args.space), _meter(args).backend, args.out, args.samples,
                             passes=args.passes, seed=args.seed)
    print(f"held-out subnets within +/-10 %: {report['within_10pct']:.1%} of {report['held_out']} "
          f"(mean |error| {report['mean_abs_rel_error']:.1%}); device repeatability (pass 2 vs 1): "
          f"{report['repeatability_within_10pct']:.1%} of {report['subnets']}")
    print(f"predictor: {Path(args.out) / 'predictor.json'}")


def cmd_latency_server(args: argparse.Namespace) -> None:
    from nas.latency.server import serve

    serve(args.port, args.host)


def cmd_search(args: argparse.Namespace) -> None:
    from nas.search.study import SearchConfig, parse_macs, run_search

    ann, images = _data_paths(args)
    out = args.out or str(Path(args.supernet).resolve().parent / "search")
    cfg = SearchConfig(supernet=args.supernet, val_ann=ann, val_images=images, latency_budget_ms=args.latency_budget,
                       out=out, macs_budget=parse_macs(args.macs_budget), trials=args.trials, sampler=args.sampler,
                       storage=args.storage, study=args.study, eval_images=args.eval_images,
                       calib_data=args.calib_data, calib_images=args.calib_images, flip_test=args.flip_test,
                       predictor=args.predictor, seed=args.seed, population=args.population)
    summary = run_search(cfg, _meter(args))
    print(f"{summary['trials']} trials, {summary.get('feasible', 0)} feasible, {summary.get('pareto', 0)} on the "
          f"Pareto front (best AP {summary.get('best_ap')})")
    print(f"trials: {Path(out) / 'trials.csv'}\npareto: {Path(out) / 'pareto.json'}\nstudy: {cfg.storage_url}")


def _training_flags(p: argparse.ArgumentParser, space: bool = True) -> None:
    for prefix in ("", "val-"):
        p.add_argument(f"--{prefix}data", help="a synthetic set folder (annotations.json + images/)")
        p.add_argument(f"--{prefix}ann")
        p.add_argument(f"--{prefix}images")
    if space:
        p.add_argument("--space", help="shipped space name or YAML path (default cpu)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--time-budget-min", type=float, help="a hard limit on training time")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random affine + flip (default on; off for synthetic sets, see nas/app/configs/baseline.yaml)")
    p.add_argument("--device", help="auto (a GPU when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--spec", help="keypoint spec (default: detected from the annotations)")


def _latency_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"))
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (0: runtime default)")
    p.add_argument("--optimization", default="all", choices=("disable", "basic", "extended", "all"))
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--url", help="measure on a remote posenas latency-server (http://host:port)")
    p.add_argument("--cache", default="results/latency-cache.sqlite", help="persistent measurement table")
    p.add_argument("--no-cache", action="store_true")


def _subnet_archs(args: argparse.Namespace, space) -> list[dict]:
    """The arch configs named by ``--arch`` (JSON or preset) or ``--pareto FILE --top K``."""
    from nas.train.finetune import pareto_winners

    if bool(args.arch) == bool(args.pareto):
        raise PoseNASError("give exactly one of --arch ARCH.json|PRESET or --pareto PARETO.json")
    return [space.resolve(args.arch)] if args.arch else [space.validate(a) for a in pareto_winners(args.pareto, args.top)]


def cmd_finetune(args: argparse.Namespace) -> None:
    from nas.train.finetune import FinetuneConfig, finetune_subnet
    from nas.subnet.inherit import supernet_data, load_supernet
    from search_spaces import arch_hash

    _, space, ckpt = load_supernet(args.supernet)
    archs = _subnet_archs(args, space)
    train_ann, train_images = supernet_data(ckpt)  # by default, finetune on the supernet's training data
    cfg = _train_config(args, FinetuneConfig, {"train_ann": train_ann, "train_images": train_images})
    meter = _meter(args)
    for i, arch in enumerate(archs):
        record = finetune_subnet(args.supernet, arch, cfg, Path(args.out) / f"{i + 1}-{arch_hash(arch)}", meter)
        print(f"{record['arch_hash']}: AP {record['before']['AP']} inherited -> {record['after']['AP']} finetuned; "
              f"exported to {record['export']}")


def cmd_export(args: argparse.Namespace) -> None:
    from nas.subnet.calibration import CalibrationSet, recalibrate
    from nas.pose.dataset import CocoPoseDataset
    from nas.pose.evaluate import format_metrics, metrics_json
    from nas.subnet.export import export_subnet
    from nas.subnet.inherit import supernet_data, load_supernet
    from nas.train.static import evaluate_network
    from supernet.network import extract

    supernet, space, ckpt = load_supernet(args.supernet)
    arch = space.resolve(args.arch)
    calibration = CalibrationSet(CocoPoseDataset(*supernet_data(ckpt), ckpt["spec"]), args.calib_images)
    net = recalibrate(extract(supernet, arch), calibration.batches(arch["resolution"]))
    metrics = None
    if args.data or args.ann:
        metrics = metrics_json(evaluate_network(net, CocoPoseDataset(*_data_paths(args), ckpt["spec"]),
                                                arch["resolution"], args.flip_test, progress=True)[0])
        print(format_metrics(metrics))
    card = export_subnet(net, arch, args.out, ckpt["spec"], metrics, _meter(args), source={"supernet": args.supernet})
    latency = card.get("latency", {})
    print(f"exported {card['arch_hash']} to {args.out}: {card['macs'] / 1e9:.3f} GMACs, "
          f"{latency.get('median_ms', float('nan')):.2f} ms, ONNX max |diff| {card['onnx']['max_abs_difference']:.1e}")


def cmd_plot(args: argparse.Namespace) -> None:
    from nas.app.report import plot_run

    for path in plot_run(args.run):
        print(path)


def cmd_run(args: argparse.Namespace) -> None:
    from nas.app.pipeline import run_pipeline

    run_pipeline(args.config, args.out)


def cmd_bench(args: argparse.Namespace) -> None:
    from nas.app.bench import FIGURES, run_benchmarks

    unknown = sorted(set(args.only or ()) - set(FIGURES))
    if unknown:
        raise PoseNASError(f"--only: unknown figure(s) {unknown}; figures: {list(FIGURES)}")
    run_benchmarks(args.out, args.quick, args.only)
    print(f"figures: {Path(args.out) / 'bench.md'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posenas", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: synthesize, check").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write a synthetic COCO-format multi-person set")
    s.add_argument("--out", required=True)
    s.add_argument("--images", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"))
    s.set_defaults(func=cmd_synth)
    c = data.add_parser("check", help="summarize a dataset; --oracle gives the AP ceiling of the targets")
    c.add_argument("--ann", required=True)
    c.add_argument("--images")
    c.add_argument("--spec")
    c.add_argument("--oracle", action="store_true")
    c.add_argument("--resolution", type=int, default=512)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("eval", help="COCO keypoint AP of a results file, or of a checkpoint run on the images")
    e.add_argument("--ann", required=True)
    e.add_argument("--results", help="COCO keypoint results JSON")
    e.add_argument("--checkpoint", help="a training checkpoint or an exported subnet folder to run on the --ann images")
    e.add_argument("--images")
    e.add_argument("--size", type=int, help="input resolution (default: the training one)")
    e.add_argument("--flip-test", action="store_true")
    e.add_argument("--save-results", help="with --checkpoint: write the detections here")
    e.add_argument("--spec")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="train one static network (a preset or an arch config) alone")
    _training_flags(t)
    t.add_argument("--config", help="YAML file of training settings")
    t.add_argument("--out", required=True, help="run folder; resumes from its checkpoint.pt when present")
    t.add_argument("--arch", help="preset name (default litepose_xs) or arch config JSON")
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float)
    t.set_defaults(func=cmd_train)

    ts = sub.add_parser("train-supernet", help="train the once-for-all supernet of a search space")
    _training_flags(ts)
    ts.add_argument("--config", help="YAML experiment config: phases, sandwich, distillation, data ...")
    ts.add_argument("--out", required=True, help="run folder; resumes from its supernet.pt when present")
    ts.set_defaults(func=cmd_train_supernet)

    es = sub.add_parser("eval-subnet", help="AP of a subnet with inherited weights, BN recalibrated")
    es.add_argument("--supernet", required=True, help="supernet.pt from train-supernet")
    es.add_argument("--arch", required=True, help="arch config JSON or a preset name of the supernet's space")
    es.add_argument("--data", help="evaluation set folder (annotations.json + images/)")
    es.add_argument("--ann")
    es.add_argument("--images")
    es.add_argument("--calib-data", help="BN calibration images (default: the supernet's training set)")
    es.add_argument("--calib-images", type=int, default=64)
    es.add_argument("--limit", type=int, help="evaluate the first N images only")
    es.add_argument("--flip-test", action="store_true")
    es.add_argument("--json", action="store_true")
    es.set_defaults(func=cmd_eval_subnet)

    pr = sub.add_parser("predict", help="draw detected skeletons on an image")
    pr.add_argument("image")
    pr.add_argument("--checkpoint", required=True, help="a training checkpoint or an exported subnet folder")
    pr.add_argument("--out", required=True)
    pr.add_argument("--size", type=int)
    pr.add_argument("--threshold", type=float, default=0.2, help="minimum person score to draw")
    pr.add_argument("--flip-test", action="store_true")
    pr.set_defaults(func=cmd_predict)

    b = sub.add_parser("bench", help="every benchmark figure beside its target: results/bench/bench.{json,md}")
    b.add_argument("--quick", action="store_true", help="small scale, under 10 minutes; full-scale targets not judged")
    b.add_argument("--only", nargs="+", metavar="FIGURE", help="run these figures only (synth, oracle, baseline, "
                   "cost, largest, overhead, supernet, predictor, runtime, decode, search)")
    b.add_argument("--out", default="results/bench")
    b.set_defaults(func=cmd_bench)

    arch = sub.add_parser("arch", help="arch configs: sample, cost, presets").add_subparsers(
        dest="arch_command", required=True)
    for name, func, text in (("macs", cmd_arch_macs, "MACs and parameters of an arch config"),
                             ("sample", cmd_arch_sample, "write a preset or random arch config"),
                             ("presets", cmd_arch_presets, "list a space's presets with their cost")):
        a = arch.add_parser(name, help=text)
        a.add_argument("--space", default="cpu", help="shipped space name (cpu, default, tiny) or YAML path")
        a.add_argument("--keypoints", type=int, default=17, help="keypoints of the dataset (COCO: 17)")
        if name != "presets":
            a.add_argument("--preset", help="min, max, higherhrnet_w32, litepose_xs/s/m/l")
            a.add_argument("--random", action="store_true")
            a.add_argument("--seed", type=int, default=0)
        if name == "macs":
            a.add_argument("--arch", help="arch config JSON")
            a.add_argument("--json", action="store_true")
        if name == "sample":
            a.add_argument("--out", help="write the config here (default: print it)")
        a.set_defaults(func=func)

    lat = sub.add_parser("latency", help="measured latency and the latency predictor").add_subparsers(
        dest="latency_command", required=True)
    lm = lat.add_parser("measure", help="latency of one subnet (ONNX in onnxruntime by default)")
    lm.add_argument("--space", default="cpu")
    lm.add_argument("--arch")
    lm.add_argument("--preset")
    lm.add_argument("--keypoints", type=int, default=17)
    lm.add_argument("--json", action="store_true")
    _latency_flags(lm)
    lm.set_defaults(func=cmd_latency_measure)
    lb = lat.add_parser("build-predictor", help="measure subnets, fit the predictor, report its accuracy")
    lb.add_argument("--space", default="cpu")
    lb.add_argument("--samples", type=int, default=120)
    lb.add_argument("--passes", type=int, default=3, help="measurement passes over all subnets (median)")
    lb.add_argument("--seed", type=int, default=0)
    lb.add_argument("--out", required=True)
    _latency_flags(lb)
    lb.set_defaults(func=cmd_latency_predictor)
    ls = sub.add_parser("latency-server", help="measure ONNX models sent over HTTP on this device")
    ls.add_argument("--port", type=int, default=8765)
    ls.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    ls.set_defaults(func=cmd_latency_server)

    se = sub.add_parser("search", help="Optuna search of subnets under MACs and latency budgets")
    se.add_argument("--supernet", required=True)
    se.add_argument("--data", help="held-out evaluation set folder")
    se.add_argument("--ann")
    se.add_argument("--images")
    se.add_argument("--latency-budget", type=float, required=True, metavar="MS")
    se.add_argument("--macs-budget", help="e.g. 800M or 1.2G")
    se.add_argument("--trials", type=int, default=40, help="completed trials the study should hold")
    se.add_argument("--sampler", default="nsga2", choices=("nsga2", "tpe", "random"))
    se.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db)")
    se.add_argument("--study", default="posenas")
    se.add_argument("--out", help="run folder (default: search/ beside the supernet)")
    se.add_argument("--eval-images", type=int, default=100)
    se.add_argument("--calib-data")
    se.add_argument("--calib-images", type=int, default=64)
    se.add_argument("--flip-test", action="store_true")
    se.add_argument("--predictor", help="predictor.json: skip measuring subnets predicted far over budget")
    se.add_argument("--seed", type=int, help="sampler seed (give each worker its own)")
    se.add_argument("--population", type=int, default=10, help="NSGA-II generation size (its first one is random)")
    _latency_flags(se)
    se.set_defaults(func=cmd_search)

    ft = sub.add_parser("finetune", help="finetune subnets from inherited weights (teacher: the largest) and export")
    ft.add_argument("--supernet", required=True)
    ft.add_argument("--arch", help="arch config JSON or a preset name")
    ft.add_argument("--pareto", help="pareto.json of a search: finetune its --top best")
    ft.add_argument("--top", type=int, default=2)
    _training_flags(ft, space=False)  # training data defaults to the supernet's; --val-data: AP before and after
    ft.add_argument("--config", help="YAML file of training settings")
    ft.add_argument("--epochs", type=int)
    ft.add_argument("--lr", type=float)
    ft.add_argument("--out", required=True, help="one folder per subnet inside; each resumes")
    _latency_flags(ft)
    ft.set_defaults(func=cmd_finetune)

    ex = sub.add_parser("export", help="a subnet with inherited weights as safetensors + arch + ONNX + card")
    ex.add_argument("--supernet", required=True)
    ex.add_argument("--arch", required=True, help="arch config JSON or a preset name")
    ex.add_argument("--out", required=True)
    ex.add_argument("--data", help="evaluate on this set for the card's metrics")
    ex.add_argument("--ann")
    ex.add_argument("--images")
    ex.add_argument("--calib-images", type=int, default=64)
    ex.add_argument("--flip-test", action="store_true")
    _latency_flags(ex)
    ex.set_defaults(func=cmd_export)

    pl = sub.add_parser("plot", help="accuracy-latency Pareto plot of a run or search folder")
    pl.add_argument("--run", required=True)
    pl.set_defaults(func=cmd_plot)

    r = sub.add_parser("run", help="the whole NAS pipeline (embedded default: synthetic data, cpu.yaml, SQLite)")
    r.add_argument("config", nargs="?", help="YAML run config; the embedded default when omitted")
    r.add_argument("--out", help="run folder (default results/<name>)")
    r.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (PoseNASError, SpaceError) as e:
        print(f"posenas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posenas: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
