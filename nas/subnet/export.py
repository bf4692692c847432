"""Exported subnets: one folder a user takes away, rebuilt without the supernet or any pickle.

A folder holds ``model.safetensors`` (weights), ``arch.json`` (the arch config), ``model.onnx``
(checked against torch in onnxruntime) and ``card.json`` (metrics, MACs, params, measured latency
with the device fingerprint and runtime settings, and the weights' SHA-256). The card is written
last: a folder with a card is a whole export.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from nas.errors import PoseNASError
from nas.io import atomic_write, read_checkpoint, read_json, sha256, write_json
from nas.pose.decode import DecodeConfig
from nas.subnet.onnx import OPSET, OUTPUTS, PEOPLE, finest_stride, max_abs_difference, to_onnx
from search_spaces import arch_hash, write_arch
from supernet.cost import arch_cost
from supernet.network import build_static

WEIGHTS, ARCH, ONNX, CARD = "model.safetensors", "arch.json", "model.onnx", "card.json"
REFINE = "refine"  # the folder of a skeleton completer that travels with the subnet
ONNX_TOLERANCE = 1e-4


def export_subnet(net: torch.nn.Module, arch: dict, out: str | Path, spec: str, metrics: dict | None = None,
                  latency: dict | None = None, source: dict | None = None, refine=None) -> dict:
    """Write the export folder of a static subnet; returns its card. ``latency`` is the card's
    measured latency (figures, device and runtime settings: ``LatencyMeter.card_entry``);
    ``refine``, a skeleton completer that travels with the subnet (in ``refine/``)."""
    from safetensors.torch import save_file

    out = Path(out)
    net = net.cpu().eval()
    state = {name: t.detach().contiguous().clone() for name, t in net.state_dict().items()}
    atomic_write(out / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"arch_hash": arch_hash(arch)}))
    write_arch(out / ARCH, arch)
    model = to_onnx(net, arch["resolution"])
    difference = max_abs_difference(net, model, arch["resolution"])
    if difference > ONNX_TOLERANCE:
        raise PoseNASError(f"{out / ONNX}: onnxruntime differs from torch by {difference:.2e} "
                           f"(tolerance {ONNX_TOLERANCE}); not exported")
    atomic_write(out / ONNX, lambda tmp: Path(tmp).write_bytes(model))
    k = net.num_keypoints
    cost = arch_cost(arch, k)
    card = {"arch_hash": arch_hash(arch), "spec": spec, "num_keypoints": k, "resolution": arch["resolution"],
            "macs": cost.macs, "params": cost.params, "metrics": metrics,
            "onnx": {"opset": OPSET, "max_abs_difference": difference,
                     "outputs": list(PEOPLE if arch["head"]["type"] == "query" else OUTPUTS),
                     "decode": asdict(DecodeConfig()), "stride": finest_stride(arch)},
            "weights_sha256": sha256(out / WEIGHTS),
            "source": source or {}}
    if latency is not None:
        card["latency"] = latency
    if refine is not None:
        card["refine"] = refine.save(out / REFINE)
    write_json(out / CARD, card, indent=1)
    return card


def load_subnet(folder: str | Path) -> tuple[torch.nn.Module, dict]:
    """The static model of an export folder and its card; the weights must match the card's hash."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CARD).is_file():
        raise PoseNASError(f"{folder}: not an exported subnet (no {CARD})")
    card = read_json(folder / CARD, "export card")
    arch = read_json(folder / ARCH, "arch config")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise PoseNASError(f"{weights}: missing")
    if sha256(weights) != card.get("weights_sha256"):
        raise PoseNASError(f"{weights}: SHA-256 differs from {CARD}'s weights_sha256 (modified or corrupt)")
    try:
        state = load_file(weights)
    except SafetensorError as e:
        raise PoseNASError(f"{weights}: not a readable safetensors file ({e})") from None
    try:
        net = build_static(arch, state)
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise PoseNASError(f"{folder}: weights do not fit {ARCH} ({str(e).splitlines()[0]})") from None
    return net, card


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


def load_network(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict, str]:
    """A network from an export folder or a training checkpoint: (model, arch config, spec name)."""
    if Path(path).is_dir():
        net, card = load_subnet(path)
        return net.to(device), net.arch, card["spec"]
    net, ckpt = load_model(path, device)
    return net, ckpt["arch"], ckpt["spec"]
