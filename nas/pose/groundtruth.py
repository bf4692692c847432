"""A COCO keypoint ground truth checked field by field before anything trusts it: COCOeval
believes whatever it is given (a duplicate annotation id, a zero area, a visibility of 7 or a
``num_keypoints`` that disagrees with the flags silently move an AP), and training crashes late
on what a check finds at once. One line names the file and the entry."""
from __future__ import annotations

import math
from pathlib import Path

from nas.errors import PoseNASError

VISIBILITY = (0, 1, 2)  # COCO: unlabelled, labelled but occluded, visible


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_images(images: list, path: Path) -> set[int]:
    """The image ids, each an integer once, with a file name and a positive width and height."""
    ids = set()
    for i, img in enumerate(images):
        where = f"{path}: image entry #{i}"
        if not isinstance(img, dict) or not {"id", "file_name"} <= img.keys():
            raise PoseNASError(f"{where} {str(img)[:80]} lacks 'id' or 'file_name'")
        if not is_id(img["id"]) or img["id"] in ids:
            raise PoseNASError(f"{where}: id {img['id']!r} is not an integer, or not unique")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise PoseNASError(f"{where} (id {img['id']}): 'file_name' must be a non-empty string")
        for side in ("width", "height"):
            if not (is_id(img.get(side)) and img[side] > 0):
                raise PoseNASError(f"{where} (id {img['id']}): {side!r} must be a positive integer, got "
                                   f"{img.get(side)!r}")
        ids.add(img["id"])
    return ids


def check_person(ann: dict, k: int, spec_name: str, where: str) -> None:
    """A person annotation's keypoints, flags, box and area; fills the optional fields COCOeval
    reads (``iscrowd``, ``num_keypoints``, ``area``)."""
    kp = ann.get("keypoints")
    if not isinstance(kp, list) or len(kp) != 3 * k:
        n = len(kp) if isinstance(kp, list) else type(kp).__name__
        raise PoseNASError(f"{where}: 'keypoints' has {n} values, expected {3 * k} (3 x {k} for spec {spec_name!r})")
    if not all(map(is_number, kp)):
        raise PoseNASError(f"{where}: 'keypoints' holds non-numeric or non-finite values")
    flags = kp[2::3]
    if any(v not in VISIBILITY for v in flags):
        raise PoseNASError(f"{where}: keypoint visibility flags must be 0, 1 or 2, got "
                           f"{sorted({v for v in flags if v not in VISIBILITY})[:3]}")
    labelled = sum(v > 0 for v in flags)
    count = ann.setdefault("num_keypoints", labelled)  # COCOeval ignores a person whose count is 0
    if not (is_id(count) and count >= 0) or (count > 0) != (labelled > 0):
        raise PoseNASError(f"{where}: num_keypoints {count!r} but {labelled} keypoints are labelled (visibility > 0)")
    if ann.setdefault("iscrowd", 0) not in (0, 1):
        raise PoseNASError(f"{where}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}")
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox)) and min(bbox[2:]) >= 0):
        raise PoseNASError(f"{where}: 'bbox' must be [x, y, w, h] of finite numbers with w, h >= 0, got {bbox!r}"[:200])
    area = ann.setdefault("area", float(bbox[2] * bbox[3]))
    if not (is_number(area) and area >= 0) or (area == 0 and labelled and not ann["iscrowd"]):
        raise PoseNASError(f"{where}: 'area' {area!r} must be a finite number, positive for a labelled person "
                           f"(the OKS scale)")
    segmentation = ann.get("segmentation")
    if segmentation is not None and not (isinstance(segmentation, list) and all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(is_number, p)) for p in segmentation)
            or isinstance(segmentation, dict) and {"counts", "size"} <= segmentation.keys()):
        raise PoseNASError(f"{where}: 'segmentation' must be polygons (lists of x, y) or an RLE with counts and size")


def check_annotations(data: dict, path: Path, category_id: int, k: int, spec_name: str) -> int:
    """Every annotation of ``data``; returns how many are non-crowd people with keypoints."""
    image_ids = check_images(data["images"], path)
    ids, people = set(), 0
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise PoseNASError(f"{path}: annotation #{i} is not an object")
        where = f"{path}: annotation id {ann.get('id', f'#{i}')!r} (image {ann.get('image_id')!r})"
        if not is_id(ann.get("id")) or ann["id"] in ids:
            raise PoseNASError(f"{where}: 'id' must be an integer unique among the annotations")
        ids.add(ann["id"])
        if not is_id(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise PoseNASError(f"{where}: image_id is not in 'images'")
        if ann.get("category_id") != category_id:
            continue
        check_person(ann, k, spec_name, where)
        people += bool(not ann["iscrowd"] and ann["num_keypoints"] > 0)
    return people
