"""The embedded synthetic multi-person dataset: articulated figures in cluttered scenes.

What it models: 1 to 10 people per image with COCO's 17 joints, articulated within joint limits,
heights from about 1/10 to nearly the full image, crowds and mutual occlusion (occluded joints
labeled but not visible), truncation at the border (out-of-frame joints unlabeled), front
occluders, crowd regions of tiny unlabeled people (``iscrowd``), and muted textured backgrounds
with shapes and stick-like distractors; people are outlined, as clothing edges are in photos.
Each person's left limbs carry a light stripe and the left ear a light dot, and people face
towards or away from the camera, so left and right are learnable only from that cue (a mirrored
scene puts the stripe on the right limbs: train on these sets without flip augmentation). As in
COCO, people whose mask covers fewer than 32 x 32 pixels get no keypoints (``num_keypoints``
0): they are drawn, and become ignore regions in training and evaluation.

What it does not model: real appearance, clothing, 3-D pose and perspective beyond a per-limb
foreshortening, lighting, motion blur.

Every image comes from its own seed (the dataset seed and the image index), so a set is
deterministic and any image can be regenerated alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from nas.io import write_json
from nas.pose.dataset import ANNOTATIONS, IMAGES, SYNTHETIC
from nas.pose.keypoints import COCO

K = COCO.num_keypoints
J = {name: i for i, name in enumerate(COCO.keypoints)}
# Limb segments drawn as capsules: (from, to, thickness as a fraction of height, shade).
LIMBS = (
    ("left_hip", "left_knee", 0.085, 1.0), ("left_knee", "left_ankle", 0.065, 0.75),
    ("right_hip", "right_knee", 0.085, 1.0), ("right_knee", "right_ankle", 0.065, 0.75),
    ("left_shoulder", "left_elbow", 0.060, 1.0), ("left_elbow", "left_wrist", 0.048, 0.75),
    ("right_shoulder", "right_elbow", 0.060, 1.0), ("right_elbow", "right_wrist", 0.048, 0.75),
)
LEGS, ARMS = LIMBS[:4], LIMBS[4:]
MIN_LABELED_AREA = 32 * 32  # COCO labels no keypoints on people smaller than this (pixels of mask)


@dataclass
class Person:
    joints: np.ndarray  # (K, 2) float, image coordinates
    face_visible: np.ndarray  # (K,) bool: face joints exist only for people facing the camera
    height: float
    color: tuple[int, int, int]
    skin: tuple[int, int, int]


def _unit(angle: float) -> np.ndarray:
    return np.array([np.sin(angle), -np.cos(angle)])


def sample_person(rng: np.random.Generator, centre: np.ndarray, height: float) -> Person:
    """A 2-D articulated figure; angles stay inside human joint limits."""
    h = height
    tilt = rng.normal(0, np.deg2rad(10)) if rng.random() > 0.1 else rng.uniform(-1, 1) * np.deg2rad(60)
    up, right = _unit(tilt), _unit(tilt + np.pi / 2)  # right: towards image right
    facing = rng.random() < 0.65  # towards the camera: the person's left is on the image right
    side = {"left": 1.0 if facing else -1.0, "right": -1.0 if facing else 1.0}
    width = rng.uniform(0.65, 1.0)
    pelvis = centre
    neck = pelvis + up * 0.31 * h
    j = np.zeros((K, 2))
    down = -up

    def limb_dir(angle: float, s: float) -> np.ndarray:  # 0 = down, pi/2 = outwards, pi = up
        return np.cos(angle) * down + np.sin(angle) * s * right

    for name in ("left", "right"):
        s = side[name]
        j[J[f"{name}_shoulder"]] = neck + right * s * 0.11 * h * width
        j[J[f"{name}_hip"]] = pelvis + right * s * 0.075 * h * width
        a = rng.uniform(np.deg2rad(-25), np.deg2rad(170))
        j[J[f"{name}_elbow"]] = j[J[f"{name}_shoulder"]] + limb_dir(a, s) * 0.17 * h * rng.uniform(0.6, 1.0)
        a2 = a - rng.uniform(0, np.deg2rad(145)) * (1 if rng.random() < 0.8 else -0.3)
        j[J[f"{name}_wrist"]] = j[J[f"{name}_elbow"]] + limb_dir(a2, s) * 0.16 * h * rng.uniform(0.6, 1.0)
        b = rng.uniform(np.deg2rad(-12), np.deg2rad(50)) if rng.random() > 0.1 else rng.uniform(0.8, 1.6)
        j[J[f"{name}_knee"]] = j[J[f"{name}_hip"]] + limb_dir(b, s) * 0.26 * h * rng.uniform(0.65, 1.0)
        b2 = b - rng.uniform(np.deg2rad(-10), np.deg2rad(60))
        j[J[f"{name}_ankle"]] = j[J[f"{name}_knee"]] + limb_dir(b2, s) * 0.26 * h * rng.uniform(0.65, 1.0)
    head_tilt = tilt + rng.normal(0, np.deg2rad(12))
    hup, hright = _unit(head_tilt), _unit(head_tilt + np.pi / 2)
    head = neck + hup * 0.085 * h
    turn = rng.uniform(-0.6, 0.6)  # head yaw, as a sideways shift of the face
    for name in ("left", "right"):
        s = side[name]
        j[J[f"{name}_ear"]] = head + hright * s * 0.06 * h * (1 - 0.3 * abs(turn)) + hright * turn * 0.01 * h
        j[J[f"{name}_eye"]] = head + hup * 0.012 * h + hright * (s * 0.024 + turn * 0.025) * h
    j[J["nose"]] = head - hup * 0.01 * h + hright * turn * 0.035 * h
    face = np.ones(K, bool)
    if not facing:
        face[[J["nose"], J["left_eye"], J["right_eye"]]] = False
    color = tuple(int(c) for c in rng.integers(30, 226, 3))
    skin = tuple(int(c) for c in np.clip(np.array([200, 160, 130]) * rng.uniform(0.45, 1.15), 0, 255))
    return Person(j, face, h, color, skin)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * 16)), int(round(p[1] * 16))  # cv2 shift=4 sub-pixel drawing


def _line(img, a, b, color, thick):
    cv2.line(img, _pt(a), _pt(b), color, max(1, int(round(thick))), cv2.LINE_AA, shift=4)


def _disc(img, c, r, color):
    cv2.circle(img, _pt(c), max(1, int(round(r * 16))), color, -1, cv2.LINE_AA, shift=4)


def draw_person(img: np.ndarray, p: Person, mask: np.ndarray | None = None) -> None:
    """Paint a person onto ``img``; with ``mask``, paint its silhouette (value 1) there instead."""
    j, h = p.joints, p.height
    shade = lambda c, f: tuple(int(min(255, v * f)) for v in c)  # noqa: E731
    target = img if mask is None else mask
    paint = (lambda c: c) if mask is None else (lambda c: 1)
    if mask is None:  # a dark outline under the body separates people from each other and the scene
        for a, b, t, _ in LIMBS:
            _line(img, j[J[a]], j[J[b]], (10, 10, 10), t * h + 2)
        _disc(img, (j[J["left_ear"]] + j[J["right_ear"]]) / 2, 0.07 * h + 1, (10, 10, 10))
    for a, b, t, f in LEGS:
        _line(target, j[J[a]], j[J[b]], paint(shade(p.color, 0.6 * f)), t * h)
    torso = np.array([j[J["left_shoulder"]], j[J["right_shoulder"]], j[J["right_hip"]], j[J["left_hip"]]])
    cv2.fillConvexPoly(target, (torso * 16).round().astype(np.int32), paint(p.color), cv2.LINE_AA, shift=4)
    _line(target, j[J["left_shoulder"]], j[J["right_shoulder"]], paint(p.color), 0.05 * h)
    for a, b, t, f in ARMS:
        _line(target, j[J[a]], j[J[b]], paint(shade(p.skin, f)), t * h)
    head_c = (j[J["left_ear"]] + j[J["right_ear"]]) / 2
    _line(target, head_c, (j[J["left_shoulder"]] + j[J["right_shoulder"]]) / 2, paint(p.skin), 0.035 * h)
    _disc(target, head_c, 0.07 * h, paint(p.skin))
    for name, t in (("wrist", 0.028), ("ankle", 0.035)):
        for s in ("left", "right"):
            _disc(target, j[J[f"{s}_{name}"]], t * h, paint(shade(p.color, 0.35) if name == "ankle" else p.skin))
    if mask is not None:
        return
    for s in ("left", "right"):  # joint markers and the left-side cue
        for name in ("elbow", "knee"):
            _disc(img, j[J[f"{s}_{name}"]], 0.022 * h, shade(p.color, 0.4))
    for a, b, t, _ in LIMBS:
        if a.startswith("left"):
            _line(img, j[J[a]], j[J[b]], (235, 235, 235), max(1.0, t * h / 3))
    _disc(img, j[J["left_ear"]], 0.018 * h, (245, 245, 245))
    _disc(img, j[J["right_ear"]], 0.018 * h, (20, 20, 20))
    if p.face_visible[J["nose"]]:
        for e in ("left_eye", "right_eye"):
            _disc(img, j[J[e]], 0.011 * h, (15, 15, 15))
        _disc(img, j[J["nose"]], 0.012 * h, (170, 60, 60))


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth colour field plus texture plus distractors: shapes and limb-like sticks."""
    coarse = rng.integers(0, 256, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    texture = cv2.resize(rng.normal(0, 1, (h // 8 + 1, w // 8 + 1, 1)).astype(np.float32), (w, h))
    img = img * 0.6 + 0.4 * img.mean(axis=2, keepdims=True)  # muted colours: clothes stand out
    img = np.clip(img + texture[..., None] * rng.uniform(5, 25), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 10)):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.02, 0.25) * min(w, h)
        kind = rng.integers(4)
        if kind == 0:
            cv2.rectangle(img, (int(x), int(y)), (int(x + size), int(y + size * rng.uniform(0.3, 2))), color, -1)
        elif kind == 1:
            cv2.circle(img, (int(x), int(y)), int(size / 2), color, -1, cv2.LINE_AA)
        else:  # sticks: a joint-like polyline, so that limbs alone do not give people away
            pts = np.cumsum(rng.normal(0, size / 2, (rng.integers(2, 4), 2)), axis=0) + (x, y)
            cv2.polylines(img, [pts.astype(np.int32)], False, color, max(1, int(size / 8)), cv2.LINE_AA)
    return img


def render_scene(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[dict]]:
    """One image and its COCO annotations (without ids)."""
    img = background(rng, w, h)
    n = int(rng.choice(np.arange(1, 11), p=np.array([20, 18, 15, 12, 10, 8, 6, 5, 3, 3]) / 100))
    crowd_mode = rng.random() < 0.3
    anchor = rng.uniform(0.2, 0.8, 2) * (w, h)
    people = []
    for _ in range(n):
        height = h * rng.uniform(0.1, 0.95)
        if crowd_mode and people:
            height = people[0].height * rng.uniform(0.7, 1.3)
            centre = anchor + rng.normal(0, 0.25 * height, 2)
        else:
            centre = rng.uniform((-0.05 * w, 0.0), (1.05 * w, h * 1.05)) - (0, 0.1 * height)
        people.append(sample_person(rng, centre, height))
    people.sort(key=lambda p: p.joints[[J["left_ankle"], J["right_ankle"]], 1].max())  # far first
    crowd = []
    if rng.random() < 0.15:  # a crowd region of tiny people, annotated as iscrowd
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.6) * h
        small = [sample_person(rng, np.array([cx, cy]) + rng.normal(0, 0.06 * w, 2), h * rng.uniform(0.04, 0.07))
                 for _ in range(rng.integers(5, 15))]
        crowd_mask = np.zeros((h, w), np.uint8)
        for p in small:
            draw_person(img, p)
            draw_person(img, p, crowd_mask)
        crowd.append(crowd_mask)
    silhouettes = []
    for p in people:
        draw_person(img, p)
        m = np.zeros((h, w), np.uint8)
        draw_person(img, p, m)
        silhouettes.append(m)
    front = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(0, 3) if rng.random() < 0.35 else 0):  # occluders in front of people
        x0, y0 = rng.uniform(0, w), rng.uniform(0.2 * h, h)
        ax = (int(rng.uniform(0.05, 0.2) * w), int(rng.uniform(0.05, 0.25) * h))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.ellipse(img, (int(x0), int(y0)), ax, rng.uniform(0, 180), 0, 360, color, -1, cv2.LINE_AA)
        cv2.ellipse(front, (int(x0), int(y0)), ax, 0, 0, 360, 1, -1)
    anns = []
    covered = front.copy()
    for p, sil in reversed(list(zip(people, silhouettes))):  # front to back
        kps = np.zeros((K, 3))
        for k, (x, y) in enumerate(p.joints):
            if not p.face_visible[k] or not (0 <= x < w and 0 <= y < h):
                continue
            kps[k] = (x, y, 1 if covered[int(y), int(x)] else 2)
        covered |= sil
        labeled = kps[:, 2] > 0
        if labeled.sum() == 0 or sil.sum() == 0:
            continue
        if sil.sum() < MIN_LABELED_AREA:  # too small to label, as COCO leaves them: an ignore region
            kps[:] = 0
            labeled[:] = False
        ys, xs = np.nonzero(sil)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        rle = mask_utils.encode(np.asfortranarray(sil))
        anns.append({"keypoints": [round(float(v), 2) for v in kps.ravel()], "num_keypoints": int(labeled.sum()),
                     "bbox": bbox, "area": float(sil.sum()), "iscrowd": 0,
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    for m in crowd:
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            continue
        rle = mask_utils.encode(np.asfortranarray(m))
        anns.append({"keypoints": [0] * (3 * K), "num_keypoints": 0, "iscrowd": 1, "area": float(m.sum()),
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR), anns


def generate(out: str | Path, images: int, seed: int = 0, size: tuple[int, int] = (256, 256),
             progress: bool = True) -> Path:
    """Write ``out/images/*.jpg`` and ``out/annotations.json`` (COCO keypoints); returns the JSON path."""
    out = Path(out)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    w, h = size
    coco = {"info": {"description": f"{SYNTHETIC}, seed {seed}", "version": "1"},
            "images": [], "annotations": [],
            "categories": [{"id": 1, "name": "person", "supercategory": "person",
                            "keypoints": list(COCO.keypoints), "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton]}]}
    for i in tqdm(range(images), desc="synth", disable=not progress, unit="img"):
        rng = np.random.default_rng((seed, i))
        bgr, anns = render_scene(rng, w, h)
        name = f"{i + 1:06d}.jpg"
        cv2.imwrite(str(out / IMAGES / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
        coco["images"].append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for a in anns:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": 1, **a})
    return write_json(out / ANNOTATIONS, coco)


def synthetic_set(out: str | Path, images: int, seed: int, size: tuple[int, int] = (256, 256)) -> tuple[str, str]:
    """(annotations, images) of the set at ``out``, generated unless it is there already (the
    annotations are written last and atomically: present means whole)."""
    files = (str(Path(out) / ANNOTATIONS), str(Path(out) / IMAGES))
    if not Path(files[0]).exists():
        generate(out, images, seed, size)
    return files
