"""torchrun + DDP plumbing: init from torchrun's environment, rank-0 checks, a replica-sync check."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mimzoo.errors import MimzooError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto, cpu, cuda (this process's GPU under torchrun: its local rank) or cuda:N, checked against the GPUs."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", name):
        raise MimzooError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise MimzooError(f"--device {name} was requested but no CUDA GPU is visible; use --device cpu")
    index, count = local_rank if name == "cuda" else int(name[len("cuda:"):]), torch.cuda.device_count()
    if index >= count:
        raise MimzooError(f"--device {name} needs GPU {index}, but {count} are visible (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def init_distributed(device_name: str) -> DistContext:
    """One process, or one of torchrun's: reads RANK / WORLD_SIZE / LOCAL_RANK, picks nccl or gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= ctx.world_size
    return value


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def check_replicas_in_sync(ctx: DistContext, model: torch.nn.Module) -> str:
    """Raise if the ranks' weights differ (a DDP bug would otherwise export one rank's drifted copy)."""
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    sums = all_gather_object(ctx, checksum)
    if any(s != sums[0] for s in sums):
        raise RuntimeError(f"DDP replicas diverged: parameter checksums per rank {sums}")
    return f"weights identical on all {ctx.world_size} processes (checksum {sums[0]:.6f})"
