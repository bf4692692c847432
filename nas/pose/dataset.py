"""COCO-format keypoint datasets read through pycocotools, validated up front with one-line errors."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from nas.errors import PoseNASError
from nas.io import read_json
from nas.pose.groundtruth import check_annotations, is_id
from nas.pose.keypoints import KeypointSpec, detect_spec, get_spec, normalize_name

ANNOTATIONS, IMAGES = "annotations.json", "images"  # a set folder, as `posenas data synth` writes one
SYNTHETIC = "PoseNAS synthetic people"  # how a synthetic set's info.description begins


def set_files(folder: str | Path) -> tuple[str, str]:
    """(annotations, images) of a set folder: ``annotations.json`` beside ``images/``."""
    return str(Path(folder) / ANNOTATIONS), str(Path(folder) / IMAGES)


@dataclass
class PoseSample:
    """One image and its people, in original pixel coordinates."""

    image_id: int
    image: np.ndarray  # (H, W, 3) uint8, RGB
    keypoints: np.ndarray  # (N, K, 3) float32: x, y, COCO visibility (0 unlabeled, 1 occluded, 2 visible)
    areas: np.ndarray  # (N,) float32, the COCO `area` of each person
    ignore: np.ndarray  # (H, W) uint8, 1 on crowd regions and people without keypoints


def quiet_coco(dataset: dict) -> COCO:
    """A pycocotools COCO index built from an already-loaded dict, without its chatter."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _person_category(data: dict, path: Path, spec_name: str | None) -> tuple[int, KeypointSpec]:
    cats = [c for c in data["categories"] if isinstance(c, dict) and c.get("keypoints")]
    if not cats:
        raise PoseNASError(f"{path}: no category with a 'keypoints' list")
    cat = next((c for c in cats if c.get("name") == "person"), cats[0])
    names = cat["keypoints"]
    if not is_id(cat.get("id")) or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PoseNASError(f"{path}: the keypoint category needs an integer 'id' and 'keypoints' as a list of names")
    if spec_name is None:
        spec = detect_spec(names)
        if spec is None:
            raise PoseNASError(
                f"{path}: category {cat.get('id')} ({cat.get('name')!r}) has {len(names)} keypoints "
                f"that match no known spec; pass --spec")
    else:
        spec = get_spec(spec_name)
        if len(names) != spec.num_keypoints:
            raise PoseNASError(
                f"{path}: category {cat.get('id')} ({cat.get('name')!r}) has {len(names)} keypoints "
                f"but spec {spec.name!r} expects {spec.num_keypoints}")
        if detect_spec(names) is not None and tuple(normalize_name(n) for n in names) != spec.keypoints:
            raise PoseNASError(
                f"{path}: category {cat.get('id')} keypoint names {names[:3]}... are in another order "
                f"than spec {spec.name!r}")
    return cat["id"], spec


def load_annotations(ann_file: str | Path, spec: str | None = None) -> tuple[COCO, KeypointSpec, int]:
    """Read and validate a COCO keypoint file (``nas.pose.groundtruth``); fill the optional fields
    pycocotools' eval needs."""
    path = Path(ann_file)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise PoseNASError(f"{path}: expected a COCO object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise PoseNASError(f"{path}: missing or non-list field {key!r}")
    cat_id, kspec = _person_category(data, path, spec)
    if check_annotations(data, path, cat_id, kspec.num_keypoints, kspec.name) == 0:
        raise PoseNASError(f"{path}: no annotated person (no non-crowd annotation with keypoints)")
    return quiet_coco(data), kspec, cat_id


class CocoPoseDataset:
    """Images plus people from a COCO keypoint file; crowds and unlabeled people become ignore masks."""

    def __init__(self, ann_file: str | Path, image_dir: str | Path | None = None, spec: str | None = None):
        self.ann_file = Path(ann_file)
        if image_dir is None:  # images/ beside the JSON (synthetic sets) or beside its folder (coco-mini)
            candidates = (self.ann_file.parent / "images", self.ann_file.parent.parent / "images")
            image_dir = next((c for c in candidates if c.is_dir()), self.ann_file.parent)
        self.image_dir = Path(image_dir)
        self.coco, self.spec, self.category_id = load_annotations(ann_file, spec)
        self.image_ids = sorted(self.coco.imgs)

    @property
    def synthetic(self) -> bool:
        """Whether the set is the embedded generator's (what a model trained on it knows)."""
        info = self.coco.dataset.get("info")
        return isinstance(info, dict) and str(info.get("description", "")).startswith(SYNTHETIC)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def check_images(self) -> None:
        """Every image the annotations name is in the image folder (found, not yet decoded): a run
        learns of a missing file before it starts, not hours into an epoch."""
        for image_id in self.image_ids:
            if not self.image_path(image_id).is_file():
                raise PoseNASError(f"{self.image_path(image_id)}: image file not found (image id {image_id} in "
                                   f"{self.ann_file})")

    def load_image(self, image_id: int) -> np.ndarray:
        path = self.image_path(image_id)
        if not path.is_file():
            raise PoseNASError(f"{path}: image file not found (image id {image_id} in {self.ann_file})")
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise PoseNASError(f"{path}: not a readable image (image id {image_id} in {self.ann_file})")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def annotations(self, image_id: int) -> list[dict]:
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], catIds=[self.category_id]))

    def people(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, K, 3) and areas (N,) of the annotated, non-crowd people of an image."""
        anns = [a for a in self.annotations(image_id) if not a["iscrowd"] and a["num_keypoints"] > 0]
        k = self.spec.num_keypoints
        kps = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(-1, k, 3)
        areas = np.array([a["area"] for a in anns], dtype=np.float32)
        return kps, areas

    def ignore_mask(self, image_id: int, height: int, width: int) -> np.ndarray:
        """Crowd regions and people without keypoints, as HigherHRNet masks them out of the loss."""
        mask = np.zeros((height, width), dtype=np.uint8)
        for a in self.annotations(image_id):
            if not (a["iscrowd"] or a["num_keypoints"] == 0):
                continue
            if a.get("segmentation"):
                mask |= mask_utils.decode(self.coco.annToRLE(a)).astype(np.uint8)
            else:
                x, y, w, h = (int(round(v)) for v in a["bbox"])
                mask[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)] = 1
        return mask

    def __getitem__(self, index: int) -> PoseSample:
        image_id = self.image_ids[index]
        image = self.load_image(image_id)
        kps, areas = self.people(image_id)
        ignore = self.ignore_mask(image_id, image.shape[0], image.shape[1])
        return PoseSample(image_id, image, kps, areas, ignore)
