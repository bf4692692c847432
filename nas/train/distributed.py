"""Multi-process training as launched by ``torchrun``: gloo on CPU, NCCL on GPU.

Subnets change every step, so each rank's backward touches a different set of parameters; rather
than DistributedDataParallel with ``find_unused_parameters`` (one reducer pass per backward, and
fragile with several forward passes per step), gradients are all-reduced once per step, after
the whole sandwich, with missing gradients counted as zeros.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def local_device(device: torch.device) -> torch.device:
    """Each rank's own GPU (LOCAL_RANK) when training on CUDA."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def broadcast_module(net: nn.Module) -> None:
    """Rank 0's parameters and buffers everywhere (start of training, and before saving)."""
    if active():
        for tensor in list(net.parameters()) + list(net.buffers()):
            dist.broadcast(tensor.data, 0)


def average_gradients(net: nn.Module) -> None:
    """Mean gradient over ranks, in one flat all-reduce."""
    if not active():
        return
    params = [p for p in net.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p)
        offset += n


def gather(obj):
    """Every rank's ``obj`` as a list (a one-element list when not distributed)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    if active():
        dist.destroy_process_group()
