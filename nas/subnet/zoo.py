"""The model zoo: trained supernets shipped inside the package, found as ``zoo:NAME`` from anywhere.

Train once, search many (OFA): a user searches a shipped supernet for their own device in minutes
instead of training one for hours. An entry is a folder, nothing in it pickled:
``supernet.safetensors`` (the weights, fp16 when that leaves the inherited APs unchanged),
``card.json`` (space, keypoints, the data recipe, how it was trained, its inherited APs and the
weights' SHA-256), ``train-log.csv`` and its accuracy predictor. An entry trained on synthetic
data ships no images: its BN calibration and finetuning images are regenerated from the card's
recipe into a cache folder.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nas.errors import PoseNASError
from nas.io import atomic_write, cache_folder, read_json, sha256, write_json, write_text
from nas.pose.synth import synthetic_set

ZOO = Path(__file__).resolve().parents[1] / "zoo"
PREFIX = "zoo:"
FORMAT = "posenas-zoo/1"
WEIGHTS, CARD, LOG = "supernet.safetensors", "card.json", "train-log.csv"
PREDICTOR = "accuracy-predictor.json"  # optional: searches of this entry on predicted AP read it
CARD_KEYS = ("format", "name", "space", "space_name", "spec", "num_keypoints", "data", "sha256")


def entry_name(ref: str | Path) -> str | None:
    """NAME of a reference ``zoo:NAME``; None for anything else (a path)."""
    return str(ref)[len(PREFIX):] if str(ref).startswith(PREFIX) else None


def is_entry(ref: str | Path) -> bool:
    """``zoo:NAME`` or a folder holding an entry's card."""
    return entry_name(ref) is not None or (Path(ref) / CARD).is_file()


def is_available(ref: str | Path) -> bool:
    """Whether ``zoo:NAME`` ships in this installation, or a folder holds an entry."""
    try:
        return (locate(ref) / CARD).is_file()
    except PoseNASError:
        return False


def locate(ref: str | Path) -> Path:
    """The folder of ``zoo:NAME`` (shipped) or of an entry folder given as a path."""
    name = entry_name(ref)
    if name is None:
        return Path(ref)
    folder = ZOO / name
    if not name or "/" in name or not (folder / CARD).is_file():
        raise PoseNASError(f"{ref}: no such zoo supernet; shipped: {[c['name'] for c in cards()] or 'none'} "
                           f"(posenas zoo list)")
    return folder


def cards() -> list[dict]:
    """The card of every shipped entry, by name."""
    return [read_card(path.parent) for path in sorted(ZOO.glob(f"*/{CARD}"))]


def read_card(folder: str | Path) -> dict:
    card = read_json(Path(folder) / CARD, "zoo card")
    missing = [k for k in CARD_KEYS if not isinstance(card, dict) or k not in card]
    if missing:
        raise PoseNASError(f"{Path(folder) / CARD}: not a zoo card (missing {', '.join(missing)})")
    return card


def is_card(record: dict) -> bool:
    """Whether a loaded supernet's record is a zoo card (else a training checkpoint)."""
    return record.get("format") == FORMAT


def earlier_stage(source: str, card: dict) -> dict:
    """What a run that starts from the entry ``source`` (whose card is ``card``) keeps of it: its
    SHA-256 and training record, and so on back, so that the run's own card accounts for every
    step its weights took. Kept when training starts, not when the run is packed: by then the
    entry may have been replaced (packed into the same folder)."""
    return {"entry": str(source), "sha256": card["sha256"], **card.get("training", {})}


def training_stages(card: dict) -> list[dict]:
    """The card's training records, the first stage first (a run that went on training an earlier
    entry names it under ``continues``)."""
    stages, record = [], card.get("training", {})
    while record:
        stages.insert(0, record)
        record = record.get("continues", {})
    return stages


def load_weights(folder: str | Path, card: dict, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The entry's state dict in float32, after checking the file against the card's SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise PoseNASError(f"{path}: the zoo entry's weights are missing")
    if sha256(path) != card["sha256"]:
        raise PoseNASError(f"{path}: SHA-256 does not match its card ({card['sha256'][:12]}...): the file is "
                           f"damaged or was replaced")
    try:
        state = load_file(path, device=str(device))
    except (SafetensorError, OSError) as e:
        raise PoseNASError(f"{path}: not a readable safetensors file ({e})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def write_entry(folder: str | Path, state: dict[str, torch.Tensor], card: dict, log_csv: str,
                half: bool = True) -> dict:
    """Write the weights (floats as fp16 when ``half``), the log, then the card with the weights'
    SHA-256 and size; the card goes last, so a folder with a card is whole. Returns the card."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state.items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    write_text(folder / LOG, log_csv)
    card = {"format": FORMAT, **card, "weights_dtype": str(dtype).removeprefix("torch."),
            "sha256": sha256(folder / WEIGHTS), "size_bytes": (folder / WEIGHTS).stat().st_size}
    write_json(folder / CARD, card, indent=1)
    return card


def regenerated(card: dict, images: int) -> tuple[str, str]:
    """(annotations, images) of the first ``images`` images of the entry's synthetic training set,
    generated into the cache once (image i depends only on the seed and i)."""
    data = card["data"]
    if data.get("kind") != "synthetic":
        raise PoseNASError(f"zoo:{card['name']} was trained on {data.get('kind')!r} data; give --calib-data "
                           f"and --data for calibration and finetuning")
    w, h = data["size"]
    return synthetic_set(cache_folder() / f"synthetic-seed{data['train_seed']}-{w}x{h}-{images}", images,
                         data["train_seed"], (w, h))


def training_files(card: dict) -> tuple[str, str]:
    """The whole training set of the recipe (finetuning reads it)."""
    return regenerated(card, card["data"]["train_images"])
