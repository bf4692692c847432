"""Masked multi-resolution heatmap MSE and the associative-embedding pull/push loss."""
from __future__ import annotations

import torch


def heatmap_loss(preds: list[torch.Tensor], targets: list[torch.Tensor], masks: list[torch.Tensor],
                 background_weight: float = 1.0) -> torch.Tensor:
    """Sum over resolutions of the per-pixel squared error where the mask is 1 (HigherHRNet).

    ``background_weight`` < 1 scales the error away from any joint's Gaussian, as DEKR does,
    so that the few peak pixels are not drowned by the background.
    """
    total = preds[0].new_zeros(())
    for p, t, m in zip(preds, targets, masks):
        weight = m[:, None] if background_weight == 1.0 else m[:, None] * torch.where(t > 0, 1.0, background_weight)
        total = total + ((p - t) ** 2 * weight).mean()
    return total


def ae_loss(tags: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull each person's tags to their mean; push different people's means apart.

    tags: (B, K, H, W); joints: (B, P, J, 2) flat indices into K*H*W and a valid flag, J entries
    per person (one per joint, or several around each joint).
    Returns (pull, push), each averaged over the batch.
    """
    b = tags.shape[0]
    flat = tags.reshape(b, -1)
    idx, valid = joints[..., 0], joints[..., 1].to(tags.dtype)  # (B, P, K)
    values = flat.gather(1, idx.reshape(b, -1)).reshape(idx.shape)
    count = valid.sum(-1)  # (B, P)
    present = (count > 0).to(tags.dtype)
    mean = (values * valid).sum(-1) / count.clamp(min=1)
    pull_per = (((values - mean[..., None]) ** 2) * valid).sum(-1) / count.clamp(min=1)
    people = present.sum(-1)  # (B,)
    pull = (pull_per * present).sum(-1) / people.clamp(min=1)
    diff = mean[:, :, None] - mean[:, None, :]
    pair = present[:, :, None] * present[:, None, :] * (1 - torch.eye(mean.shape[1], device=tags.device, dtype=tags.dtype))
    push = (torch.exp(-diff ** 2) * pair).sum((1, 2)) / (people * (people - 1)).clamp(min=1)
    return pull.mean(), push.mean()


def heatmaps(outputs: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """The keypoint heatmaps of a network's outputs (the stride-4 output also carries the tags)."""
    return [outputs[0][:, :k]] + list(outputs[1:])


def distillation_loss(outputs: list[torch.Tensor], teacher: list[torch.Tensor], masks: list[torch.Tensor],
                      k: int) -> torch.Tensor:
    """In-place distillation (OFA, BigNAS): the student's heatmaps regress the teacher's, at every
    resolution both have; ``teacher`` holds the teacher's heatmaps, already detached."""
    student = heatmaps(outputs, k)
    return heatmap_loss(student, teacher[:len(student)], masks[:len(student)])


def pose_loss(outputs: list[torch.Tensor], heats, masks, joints, k: int, ae_weight: float,
              background_weight: float = 1.0) -> tuple[torch.Tensor, ...]:
    """(total, heatmap, pull, push) for outputs ordered coarse to fine; outputs the network does
    not have (no stride-2 head) are not supervised."""
    preds = heatmaps(outputs, k)
    h_loss = heatmap_loss(preds, heats[:len(preds)], masks[:len(preds)], background_weight)
    pull, push = ae_loss(outputs[0][:, k:2 * k], joints)
    return h_loss + ae_weight * (pull + push), h_loss, pull, push
