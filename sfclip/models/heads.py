"""Distillation heads: per-teacher maps from student tokens to the teacher's feature space.

A head also owns its teacher's target statistics when the target normalization is "running", so that
they travel with the student checkpoint (teacher weights never do).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HeadConfig", "DistillHead", "TOWERS", "HEAD_KINDS", "TARGET_NORMS"]

# The single source of each set of allowed values (teachers.TeacherConfig validates against them too).
TOWERS = ("vision", "text")  # the student tower a head reads = the kind of teacher it predicts
HEAD_KINDS = ("linear", "mlp")
TARGET_NORMS = ("layernorm", "none", "running")  # layer norm without affine (data2vec), none, running stats


@dataclass
class HeadConfig:
    name: str = ""  # the teacher this head predicts
    tower: str = "vision"  # vision | text
    width: int = 0  # teacher feature width
    kind: str = "linear"  # linear | mlp
    hidden: int = 0  # mlp hidden width; 0 = width
    norm: str = "layernorm"  # target normalization: layernorm | none | running
    summary: bool = False  # vision: also a linear map from the class token to the teacher's summary token

    def __post_init__(self) -> None:
        if self.tower not in TOWERS:
            raise ValueError(f"head {self.name!r}: tower must be one of {TOWERS}, got {self.tower!r}")
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head {self.name!r}: kind must be one of {HEAD_KINDS}, got {self.kind!r}")
        if self.norm not in TARGET_NORMS:
            raise ValueError(f"head {self.name!r}: norm must be one of {TARGET_NORMS}, got {self.norm!r}")


class DistillHead(nn.Module):
    """Student tokens (..., Ds) -> predicted teacher features (..., Dt), plus target normalization."""

    net: nn.Module
    summary: nn.Linear | None  # cfg.summary only
    # Buffers of norm="running" only.
    target_mean: torch.Tensor  # (Dt,)
    target_var: torch.Tensor  # (Dt,)
    target_count: torch.Tensor  # () long: batches seen

    def __init__(self, cfg: HeadConfig, in_dim: int, momentum: float = 0.01) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "linear":
            self.net = nn.Linear(in_dim, cfg.width)
        else:
            hidden = cfg.hidden or cfg.width
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.width))
        # The summary map: student class token -> the teacher's summary (class) token (RADIO's summary head).
        self.summary = nn.Linear(in_dim, cfg.width) if cfg.summary else None
        self.momentum = momentum
        if cfg.norm == "running":
            self.register_buffer("target_mean", torch.zeros(cfg.width))
            self.register_buffer("target_var", torch.ones(cfg.width))
            self.register_buffer("target_count", torch.zeros((), dtype=torch.long))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)

    @torch.no_grad()
    def _update_stats(self, t: torch.Tensor) -> None:
        flat = t.reshape(-1, t.shape[-1]).float()  # (M, Dt)
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stats = torch.stack([mean, var])
            torch.distributed.all_reduce(stats)
            mean, var = stats / torch.distributed.get_world_size()
        # The first batch sets the statistics outright instead of blending them with the placeholder 0/1.
        m = torch.where(self.target_count > 0, torch.tensor(self.momentum, device=t.device),
                        torch.ones((), device=t.device))
        self.target_mean.lerp_(mean, m)
        self.target_var.lerp_(var, m)
        self.target_count += 1

    def normalize_target(self, target: torch.Tensor) -> torch.Tensor:
        """Teacher features -> the regression target; returns a fresh tensor safe to use in a loss."""
        if self.cfg.norm == "layernorm":
            return F.layer_norm(target.float(), target.shape[-1:])
        if self.cfg.norm == "none":
            return target.float().clone()
        if self.training:
            self._update_stats(target)
        return (target.float() - self.target_mean) / (self.target_var + 1e-6).sqrt()
