"""Exported subnets: one folder a user takes away, rebuilt without the supernet or any pickle.

A folder holds ``model.safetensors`` (weights), ``arch.json`` (the arch config), ``model.onnx``
(checked against torch in onnxruntime) and ``card.json`` (metrics, MACs, params, measured latency
with the device fingerprint and runtime settings, and the SHA-256 of every other file). It is
written beside its place and swapped in whole, by one writer at a time: a kill or a second export
never leaves a card that describes other files, and ``load_subnet`` checks every hash.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from nas.errors import PoseNASError
from nas.io import read_checkpoint, read_json, sha256, staged_folder, write_json, writer_lock
from nas.pose.codecs import codec_of
from nas.pose.dataset import CocoPoseDataset
from nas.pose.decode import DecodeConfig, finest_stride
from nas.pose.keypoints import get_spec
from nas.subnet.agreement import CHECK_IMAGES, agreement
from nas.subnet.calibration import CalibrationSet
from nas.subnet.onnx import OPSET, max_abs_difference, to_onnx
from nas.subnet.precision import PRECISIONS, Precision, precision_of
from search_spaces import arch_hash, write_arch
from supernet.cost import arch_cost
from supernet.network import build_static

WEIGHTS, ARCH, ONNX, CARD = "model.safetensors", "arch.json", "model.onnx", "card.json"
REFINE = "refine"  # the folder of a skeleton completer that travels with the subnet
EXPORT_FILES = {WEIGHTS, ARCH, ONNX, CARD, REFINE} | {f"model.{name}.onnx" for name in PRECISIONS}
ONNX_TOLERANCE = 1e-4


def export_subnet(net: torch.nn.Module, arch: dict, out: str | Path, spec: str, metrics: dict | None = None,
                  latency: dict | None = None, source: dict | None = None, refine=None,
                  precision: Precision = PRECISIONS["fp32"], calibration: CalibrationSet | None = None,
                  check: CocoPoseDataset | None = None) -> dict:
    """Write the export folder of a static subnet; returns its card. ``latency`` is the card's
    measured latency (figures, device and target: ``LatencyMeter.card_entry``); ``refine``, a
    skeleton completer that travels with the subnet (in ``refine/``). A target's ``precision``
    other than fp32 adds its model (``model.int8.onnx``: calibrated on the images BN recalibration
    used, ``calibration``), with how many of the fp32 model's people it finds on ``CHECK_IMAGES``
    images of ``check`` (else of ``calibration``) recorded in the card. ``out`` may be new, empty or an export folder
    (replaced whole); anything else in it is refused."""
    out = Path(out)
    with writer_lock(out):  # a file there, or a folder another process writes, is refused before any work
        foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES) if out.is_dir() else []
        if foreign:
            raise PoseNASError(f"--out {out}: holds files that are not an export's ({', '.join(foreign[:3])}); "
                               f"give a new or empty folder, or an export folder to replace")
        net = net.cpu().eval()
        model = to_onnx(net, arch["resolution"])
        difference = max_abs_difference(net, model, arch["resolution"])
        if difference > ONNX_TOLERANCE:
            raise PoseNASError(f"{out / ONNX}: onnxruntime differs from torch by {difference:.2e} "
                               f"(tolerance {ONNX_TOLERANCE}); not exported")
        cost = arch_cost(arch, net.num_keypoints)
        card = {"arch_hash": arch_hash(arch), "spec": spec, "num_keypoints": net.num_keypoints,
                "resolution": arch["resolution"], "macs": cost.macs, "params": cost.params, "metrics": metrics,
                "onnx": {"opset": OPSET, "max_abs_difference": difference,
                         "outputs": list(codec_of(arch).deployed_outputs),
                         "decode": asdict(DecodeConfig()), "stride": finest_stride(arch["head"]["multi_resolution"])},
                "source": source or {}}
        if latency is not None:
            card["latency"] = latency
        target_model = None
        if not precision.exact:
            target_model = precision.apply(model, calibration.inputs(arch["resolution"]) if calibration else None)
            images = [check.load_image(i) for i in check.image_ids[:CHECK_IMAGES]] if check else \
                calibration.images[:CHECK_IMAGES] if calibration else []
            card["precision"] = {"name": precision.name, "file": f"model.{precision.name}.onnx",
                                 "against_fp32": agreement(model, target_model, codec_of(arch), images,
                                                           arch["resolution"], get_spec(spec))}
        with staged_folder(out) as staged:
            write_files(net, arch, model, staged)
            if target_model is not None:
                (staged / card["precision"]["file"]).write_bytes(target_model)
            if refine is not None:
                card["refine"] = refine.save(staged / REFINE)
            card["files"] = {str(f.relative_to(staged)): sha256(f) for f in sorted(staged.rglob("*")) if f.is_file()}
            write_json(staged / CARD, card, indent=1)
    return card


def write_files(net: torch.nn.Module, arch: dict, model: bytes, folder: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    state = {name: t.detach().contiguous().clone() for name, t in net.state_dict().items()}
    try:
        save_file(state, folder / WEIGHTS, metadata={"arch_hash": arch_hash(arch)})
    except SafetensorError as e:  # its I/O errors (a full disk) come as its own kind
        raise PoseNASError(f"{folder.parent}: the export could not be written ({str(e).splitlines()[0]})") from None
    write_arch(folder / ARCH, arch)
    (folder / ONNX).write_bytes(model)


def load_subnet(folder: str | Path) -> tuple[torch.nn.Module, dict]:
    """The static model of an export folder and its card; every file must match the card's hash."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CARD).is_file():
        raise PoseNASError(f"{folder}: not an exported subnet (no {CARD})")
    card = read_json(folder / CARD, "export card")
    files = card.get("files") if isinstance(card, dict) else None
    if not isinstance(files, dict) or not {WEIGHTS, ARCH, ONNX} <= files.keys():
        raise PoseNASError(f"{folder / CARD}: lists no hashes of {WEIGHTS}, {ARCH} and {ONNX} (not an export card, "
                           f"or one of an older PoseNAS: export the subnet again)")
    for name, digest in files.items():
        path = folder / name
        if folder.resolve() not in path.resolve().parents:
            raise PoseNASError(f"{folder / CARD}: names a file outside its folder ({name[:80]})")
        if not path.is_file():
            raise PoseNASError(f"{path}: missing")
        if sha256(path) != digest:
            raise PoseNASError(f"{path}: SHA-256 differs from {CARD}'s (modified, corrupt or from another export)")
    arch = read_json(folder / ARCH, "arch config")
    try:
        state = load_file(folder / WEIGHTS)
    except SafetensorError as e:
        raise PoseNASError(f"{folder / WEIGHTS}: not a readable safetensors file ({e})") from None
    try:
        net = build_static(arch, state)
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise PoseNASError(f"{folder}: weights do not fit {ARCH} ({str(e).splitlines()[0]})") from None
    return net, card


def load_deployed(folder: str | Path, precision: str) -> bytes:
    """The export's deployed ONNX model in ``precision`` (``load_subnet`` has checked its hash)."""
    folder = Path(folder)
    _, card = load_subnet(folder)
    if precision == card.get("precision", {}).get("name"):
        return (folder / card["precision"]["file"]).read_bytes()
    if precision_of(precision).exact:
        return (folder / ONNX).read_bytes()
    raise PoseNASError(f"{folder}: holds no {precision} model; export it with --target RUNTIME/{precision}/THREADS")


def load_refiner(folder: str | Path):
    """The skeleton completer an export folder carries (``export --refine``), or None."""
    from nas.pose.completion import Completion

    card = read_json(Path(folder) / CARD, "export card")
    return Completion.load(Path(folder) / REFINE) if card.get("refine") else None


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A network of a training checkpoint and the checkpoint record, loaded without unpickling
    arbitrary objects."""
    ckpt = read_checkpoint(path, ("arch", "model"), "training checkpoint", device)
    return build_static(ckpt["arch"], ckpt["model"]).to(device), ckpt


def load_network(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict, str, bool]:
    """A network from an export folder or a training checkpoint: (model, arch config, spec name,
    whether it learned from synthetic data)."""
    if Path(path).is_dir():
        net, card = load_subnet(path)
        source = card.get("source")
        return net.to(device), net.arch, card["spec"], isinstance(source, dict) and source.get("synthetic") is True
    net, ckpt = load_model(path, device)
    return net, ckpt["arch"], ckpt["spec"], ckpt.get("synthetic") is True
