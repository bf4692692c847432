"""From a dataset sample to the tensors one training step needs, at a resolution chosen per batch."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from nas.pose.dataset import CocoPoseDataset
from nas.pose.targets import heatmaps, tag_indices
from nas.pose.transforms import (
    Augment,
    apply_to_points,
    compose,
    input_matrix,
    normalize,
    stride_matrix,
    warp_image,
    warp_keypoints,
)

MAX_PEOPLE = 30


class PoseTrainSet(Dataset):
    """Indexed by (sample index, input size): the sampler picks the resolution for each batch.

    Returns image (3, S, S), then per output stride its heatmaps (K, S/s, S/s) and valid mask
    (S/s, S/s), the tag indices (MAX_PEOPLE, J, 2) at the first (coarsest) stride, and the people
    there (MAX_PEOPLE, K, 3): x, y and visibility, 0 for joints off the map and for padding rows
    (what the query head regresses).
    """

    def __init__(self, dataset: CocoPoseDataset, strides: tuple[int, ...] = (4, 2),
                 augment: Augment | None = Augment(), seed: int = 0, tag_radius: int = 0):
        self.dataset = dataset
        self.strides = strides
        self.augment = augment
        self.seed = seed
        self.tag_radius = tag_radius
        self.epoch = 0
        self.flip_index = np.asarray(dataset.spec.flip_index)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, size = item
        rng = np.random.default_rng((self.seed, self.epoch, index))  # not the size: see TeacherPairs
        sample = self.dataset[index]
        h, w = sample.image.shape[:2]
        matrix, flipped = input_matrix(w, h, size, self.augment, rng)
        image = normalize(warp_image(sample.image, matrix, size))
        kps = sample.keypoints[:, self.flip_index] if flipped else sample.keypoints
        kps = warp_keypoints(kps, matrix, size)
        k = self.dataset.spec.num_keypoints
        heats, masks = [], []
        for s in self.strides:
            out, to_stride = size // s, stride_matrix(s)
            out_kps = kps.copy()
            out_kps[..., :2] = apply_to_points(to_stride, kps[..., :2])
            heats.append(torch.from_numpy(heatmaps(out_kps, out, k)))
            ignore = warp_image(sample.ignore.astype(np.float32), compose(to_stride, matrix), out)
            masks.append(torch.from_numpy((ignore < 0.5).astype(np.float32)))
            if s == self.strides[0]:
                tags = torch.from_numpy(tag_indices(out_kps, out, k, MAX_PEOPLE, self.tag_radius))
                people = people_rows(out_kps, out)
        return torch.from_numpy(image), heats, masks, tags, people


def people_rows(keypoints: np.ndarray, size: int) -> torch.Tensor:
    """(MAX_PEOPLE, K, 3) people on a map of ``size``: joints off it unlabelled, padding rows zero."""
    out = np.zeros((MAX_PEOPLE, keypoints.shape[1], 3), np.float32)
    kps = keypoints[:MAX_PEOPLE].astype(np.float32)
    inside = (kps[..., 2] > 0) & (kps[..., :2] >= -0.5).all(-1) & (kps[..., :2] < size - 0.5).all(-1)
    out[:len(kps), :, :2] = kps[..., :2]
    out[:len(kps), :, 2] = np.where(inside, kps[..., 2], 0)
    return torch.from_numpy(out)


class TeacherPairs(Dataset):
    """Each (sample index, size) item at the batch's size, preceded by the same scene under the same
    augmentation at ``teacher_size`` where that differs (a 1- or 2-tuple, so nothing is built
    twice). The supernet's largest subnet, the distillation teacher, then learns at the largest
    input every step while the other subnets learn at the batch's (BigNAS); ``teacher_size``
    None: both at the batch's size."""

    def __init__(self, examples: PoseTrainSet, teacher_size: int | None):
        self.examples, self.teacher_size = examples, teacher_size

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, item: tuple[int, int]):
        student = self.examples[item]
        if self.teacher_size in (None, item[1]):
            return (student,)
        return self.examples[(item[0], self.teacher_size)], student


class ResolutionBatchSampler(Sampler):
    """Shuffled batches of (index, size); each batch draws one input size from ``sizes``.

    With ``num_replicas`` > 1 each rank takes its own share of every epoch (distributed training).
    """

    def __init__(self, n: int, batch_size: int, sizes: tuple[int, ...], seed: int = 0,
                 drop_last: bool = True, shuffle: bool = True, rank: int = 0, num_replicas: int = 1):
        self.n, self.batch_size, self.sizes = n, batch_size, tuple(sizes)
        self.seed, self.drop_last, self.shuffle = seed, drop_last, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Order batches for ``epoch``, skipping its first ``start`` (a run resumed mid-epoch)."""
        self.epoch, self.start = epoch, start

    def _indices(self) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        per_rank = len(order) // self.num_replicas
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self):
        idx = self._indices()
        rng = np.random.default_rng((self.seed, self.epoch, 1))
        stop = len(idx) - len(idx) % self.batch_size if self.drop_last else len(idx)
        for number, start in enumerate(range(0, stop, self.batch_size)):
            size = int(self.sizes[rng.integers(len(self.sizes))])  # drawn even when skipped: same sizes
            if number >= self.start:
                yield [(int(i), size) for i in idx[start:start + self.batch_size]]

    def __len__(self) -> int:
        per_rank = self.n // self.num_replicas
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)
