"""Training the query head: proposals matched one-to-one to people (Hungarian), a loss at every
decoder layer, and queries seeded at the true centres.

The matching cost of a proposal and a person is PETR's: class (the proposal's person probability,
negated), keypoint L1 over the person's labelled joints (in units of the person's size), and
1 - OKS. Matched proposals learn their person; the others learn "no person". Queries seeded at
the true centres (``seeds``) learn their own person with no matching at all: the dense,
one-to-one signal that trains the decoder from the first step, while the matched proposals teach
the person scores that rank what the centre map proposes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from nas.pose.losses import heatmap_loss

CLASS_COST, L1_COST, OKS_COST = 2.0, 5.0, 2.0  # PETR's weights; the centre map's focal loss weighs 1
SCALE = 0.01  # the whole loss, to the AE loss's magnitude: both heads share a backbone and its Adam moments
CENTRE_SIGMA = 2.0  # stride-4 pixels


def people_geometry(people: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of people (B, P, K, 3) (x, y, visibility; padded rows all zero): centres (B, P, 2), the mean
    of labelled joints; presence (B, P); and areas (B, P), their joints' box, at least 1."""
    labelled = (people[..., 2] > 0).to(people.dtype)
    count = labelled.sum(-1)
    present = count > 0
    centres = (people[..., :2] * labelled[..., None]).sum(-2) / count.clamp(min=1)[..., None]
    big = torch.finfo(people.dtype).max
    low = torch.where(labelled[..., None] > 0, people[..., :2], big).amin(-2)
    high = torch.where(labelled[..., None] > 0, people[..., :2], -big).amax(-2)
    areas = torch.where(present, ((high - low).clamp(min=0) + 1).prod(-1), torch.ones_like(count))
    return centres, present, areas


def centre_maps(centres: torch.Tensor, present: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) Gaussians of ``CENTRE_SIGMA`` at the people's centres, max over people."""
    h, w = size
    ys = torch.arange(h, dtype=centres.dtype, device=centres.device)
    xs = torch.arange(w, dtype=centres.dtype, device=centres.device)
    dy = (ys[None, None, :, None] - centres[..., 1, None, None]) ** 2
    dx = (xs[None, None, None, :] - centres[..., 0, None, None]) ** 2
    maps = torch.exp(-(dx + dy) / (2 * CENTRE_SIGMA ** 2)) * present[..., None, None]
    return maps.amax(1, keepdim=True) if maps.shape[1] else maps.new_zeros(maps.shape[0], 1, h, w)


def centre_focal_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss of centre logits (B, 1, H, W) against Gaussian targets
    that reach 1 at each centre pixel, where ``mask`` (B, H, W) is 1, per person: an MSE drowned in
    background left the centre map at a tenth of its peaks, and the proposals off the people."""
    p = logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
    peak = (target == 1).to(p.dtype)
    weight = mask[:, None]
    pos = -torch.log(p) * (1 - p) ** 2 * peak
    neg = -torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - peak)
    return ((pos + neg) * weight).sum() / (peak * weight).sum().clamp(min=1)


def oks(joints: torch.Tensor, people: torch.Tensor, areas: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """COCO's OKS of predicted joints (..., K, 2) to people (..., K, 3) over their labelled joints."""
    labelled = (people[..., 2] > 0).to(joints.dtype)
    e = ((joints - people[..., :2]) ** 2).sum(-1) / (2 * sigmas) ** 2 / (areas[..., None] * 2)
    return (torch.exp(-e) * labelled).sum(-1) / labelled.sum(-1).clamp(min=1)


def l1(joints: torch.Tensor, people: torch.Tensor, areas: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over labelled joints, in units of the person's size (sqrt of area)."""
    labelled = (people[..., 2] > 0).to(joints.dtype)
    error = (joints - people[..., :2]).abs().sum(-1) / areas[..., None].sqrt()
    return (error * labelled).sum(-1) / labelled.sum(-1).clamp(min=1)


def match(joints: torch.Tensor, person_logits: torch.Tensor, people: torch.Tensor, areas: torch.Tensor,
          sigmas: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one assignment of proposals (Q, K, 2) with person logits (Q,) to people (P, K, 3)
    of least total cost: (proposal indices, person indices)."""
    if people.shape[0] == 0 or joints.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    with torch.no_grad():
        pairs = joints[:, None], people[None].expand(joints.shape[0], -1, -1, -1)
        cost = (-CLASS_COST * person_logits.sigmoid()[:, None] + L1_COST * l1(*pairs, areas[None])
                + OKS_COST * (1 - oks(*pairs, areas[None], sigmas)))
    return linear_sum_assignment(cost.float().cpu().numpy())


def seeded_people(people: torch.Tensor) -> torch.Tensor:
    """A batch's people rows (B, MAX_PEOPLE, K, 3) up to its last present person: each seeds a query."""
    present = (people[..., 2] > 0).any(-1).any(0)
    return people[:, :int(present.nonzero().max()) + 1 if present.any() else 0]


def centre_seeds(people: torch.Tensor) -> torch.Tensor:
    """Seed positions (B, P, 2) at the people's centres, for ``PoseNet(x, seeds=...)``."""
    return people_geometry(people)[0]


def query_forward_loss(net, images: torch.Tensor, people: torch.Tensor, mask: torch.Tensor,
                       sigmas: torch.Tensor, heats: torch.Tensor) -> torch.Tensor:
    """One training forward of a query-head network with queries seeded at the people's centres,
    and its loss; ``people`` (B, MAX_PEOPLE, K, 3), ``mask`` (B, H, W) and the joint heatmap
    targets ``heats`` (B, K, H, W) at stride 4."""
    people = seeded_people(people)
    outputs = net(images, seeds=centre_seeds(people))
    return query_loss(outputs[:-1], people, mask, sigmas) + heatmap_loss(outputs[-1:], [heats], [mask])


def query_loss(outputs: list[torch.Tensor], people: torch.Tensor, mask: torch.Tensor,
               sigmas: torch.Tensor) -> torch.Tensor:
    """The query head's loss from its training outputs (``supernet.query.QueryHead``) whose last
    queries were seeded at the centres of ``people`` (B, P, K, 3), one each, in order; ``mask``
    (B, H, W) is the stride-4 ignore mask."""
    centre, joints, joint_logits, person_logits, _ = outputs
    num_seeds = people.shape[1]
    centres, present, areas = people_geometry(people)
    centre_loss = centre_focal_loss(centre, centre_maps(centres.round(), present, centre.shape[-2:]), mask)
    loss = centre_loss.new_zeros(())  # the people's terms, summed over images
    proposals = joints.shape[2] - num_seeds
    for b in range(people.shape[0]):
        here = present[b].nonzero()[:, 0]
        rows, cols = match(joints[-1, b, :proposals], person_logits[-1, b, :proposals], people[b, here],
                           areas[b, here], sigmas)
        assigned = torch.as_tensor(rows, dtype=torch.long, device=joints.device)
        truth = here[torch.as_tensor(cols, dtype=torch.long, device=joints.device)]
        queries = torch.cat([assigned, proposals + here])  # and the seeds of present people
        persons = torch.cat([truth, here])
        labels = torch.zeros_like(person_logits[:, b])
        labels[:, queries] = 1.0
        target_people, target_areas = people[b, persons], areas[b, persons]
        for layer in range(joints.shape[0]):  # coarse to fine: every layer learns the same assignment
            picked = joints[layer, b, queries]
            loss = loss + F.binary_cross_entropy_with_logits(person_logits[layer, b], labels[layer])
            if len(queries):
                visible = (target_people[..., 2] > 0).to(picked.dtype)
                loss = loss + (L1_COST * l1(picked, target_people, target_areas).mean()
                               + OKS_COST * (1 - oks(picked, target_people, target_areas, sigmas)).mean()
                               + F.binary_cross_entropy_with_logits(joint_logits[layer, b, queries], visible))
    return SCALE * (centre_loss + loss / people.shape[0])  # the focal loss is per person of the batch already
