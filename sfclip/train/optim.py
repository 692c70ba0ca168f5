"""AdamW with CLIP's weight-decay exclusions, and warmup-then-cosine as a per-step multiplier."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["OptimConfig", "param_groups", "build_optimizer", "lr_lambda"]

# Parameters never decayed besides biases and norms (ndim < 2): embeddings, tokens, the temperature.
_NO_DECAY = ("pos_embed", "cls_token", "mask_token", "token_embedding", "logit_scale", "logit_bias")


@dataclass
class OptimConfig:
    lr: float = 5e-4  # OpenCLIP's ViT-B/16 recipes at a 32k batch
    weight_decay: float = 0.2  # CLIP
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # CLIP
    eps: float = 1e-6  # CLIP
    warmup_steps: int = 2000
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # 0 = off (the norm is still logged)

    def __post_init__(self) -> None:
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"optim.lr must be a positive finite number, got {self.lr} (e.g. optim.lr=5e-4)")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be a finite number >= 0, got {self.weight_decay} "
                             "(0 turns it off)")
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas needs two values, got {self.betas}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


def _decays(name: str, p: torch.Tensor) -> bool:
    return p.ndim >= 2 and not any(key in name for key in _NO_DECAY)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weight matrices, and the rest (biases, norms, embeddings, temperature)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if _decays(name, p) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # Fused AdamW (one kernel over all tensors) exists for CUDA and CPU; on a CPU it is 5.6x faster than the
    # default foreach path (benchmarks/adamw_fused.py: 17.0 against 95.5 ms a step for vit-t-16, one thread).
    devices = {p.device.type for p in model.parameters() if p.requires_grad}
    fused = len(devices) == 1 and devices <= {"cuda", "cpu"}
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, fused=fused or None)


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Multiplier of the base lr at a given step: linear warmup, then cosine (or constant) decay."""
    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return fn
