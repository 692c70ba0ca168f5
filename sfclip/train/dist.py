"""Process-group setup for one process or many (NCCL on GPU, gloo on CPU), under torchrun or SLURM's srun.

torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) win when present. Without
them, a process started by `srun` with one task per GPU (as OpenCLIP supports) reads SLURM's:
SLURM_PROCID -> RANK, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS) -> WORLD_SIZE, SLURM_LOCALID -> LOCAL_RANK.
MASTER_ADDR, unless set, is the first host of the step's node list (`scontrol show hostnames`), and
MASTER_PORT, unless set, 20000 + SLURM_JOB_ID % 20000, so that two jobs sharing a node do not collide.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "launch_env", "barrier", "all_reduce_min", "all_gather_rows"]

_TORCHRUN = ("RANK", "WORLD_SIZE")


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _scontrol_hostnames(nodelist: str) -> list[str]:
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"SLURM launch: cannot expand the node list {nodelist!r} with `scontrol show hostnames` "
                         f"({exc}); set MASTER_ADDR to the first node's address") from None
    return out.split()


def launch_env(env: Mapping[str, str] | None = None,
               hostnames: Callable[[str], list[str]] = _scontrol_hostnames) -> dict[str, str]:
    """The torchrun-style variables this process needs that `env` lacks: {} under torchrun or when not under
    srun; RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT from SLURM's variables under srun."""
    env = os.environ if env is None else env
    if any(k in env for k in _TORCHRUN) or "SLURM_PROCID" not in env:
        return {}
    world = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    out = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": world, "LOCAL_RANK": env.get("SLURM_LOCALID", "0")}
    if int(world) > 1:
        if "MASTER_ADDR" not in env:
            nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
            if not nodes:
                raise ValueError("SLURM launch: no SLURM_STEP_NODELIST / SLURM_JOB_NODELIST to find the first node; "
                                 "set MASTER_ADDR")
            # A single plain host needs no expansion; "node[01-04],gpu7" does.
            out["MASTER_ADDR"] = nodes if not any(c in nodes for c in "[,") else hostnames(nodes)[0]
        if "MASTER_PORT" not in env:
            out["MASTER_PORT"] = str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return out


def init_distributed(device: str = "auto") -> DistInfo:
    """Read torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE), or SLURM's under srun (`launch_env`, written
    into `os.environ` so that everything reading RANK agrees), and start the process group if needed."""
    os.environ.update(launch_env())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        # srun may bind each task to its own GPU (--gpus-per-task=1): it then sees one device, index 0.
        dev = torch.device("cuda", 0 if torch.cuda.device_count() == 1 else local)
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
