"""Process-group set-up: the same entry point runs alone or under `torchrun`.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK (and the rendezvous address); with them the
process joins a group (nccl on GPUs, gloo on CPUs) and training wraps the supernet in
DistributedDataParallel. Without them everything runs in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed() -> DistContext:
    """Join the torchrun group if there is one (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def mean_across(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over all processes (identity when alone)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world
    return values


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (a one-element list when alone)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
