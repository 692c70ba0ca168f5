"""Process-group setup for one process or many under torchrun (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "barrier", "all_reduce_min", "all_gather_rows"]


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE) and start the process group if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu" if device == "auto" else device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, local, world, dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_min(flag: torch.Tensor) -> torch.Tensor:
    """Agree across ranks (e.g. "every rank's loss is finite")."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag


def all_gather_rows(row: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-D `row` stacked in rank order: (world, n); (1, n) in one process. Rows must match in size."""
    if not (dist.is_available() and dist.is_initialized()):
        return row.reshape(1, -1)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else row.device
    out = [torch.empty_like(row, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(out, row.to(device))
    return torch.stack(out).cpu()
