"""Masked feature-distillation losses between student predictions and teacher targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DISTILL_LOSSES", "token_loss", "masked_distill_loss"]

DISTILL_LOSSES = ("smooth_l1", "mse", "cosine")


def _upcast(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def token_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token loss (..., D), (..., D) -> (...), computed in at least fp32."""
    pred, target = _upcast(pred), _upcast(target)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(pred, target, dim=-1)
    if kind == "mse":
        return F.mse_loss(pred, target, reduction="none").mean(-1)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=1.0).mean(-1)
    raise ValueError(f"distillation loss must be one of {DISTILL_LOSSES}, got {kind!r}")


def masked_distill_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                        kind: str) -> torch.Tensor:
    """Mean per-token loss over the positions where `weight` (B, N) is true; all positions when None.

    `pred` and `target` are (B, N, D). Rows carry different numbers of positions (text masks), so this is
    a mean over positions, not a mean of per-row means (BERT, data2vec).
    """
    per_token = token_loss(pred, target, kind)  # (B, N)
    if weight is None:
        return per_token.mean()
    w = weight.to(per_token.dtype)
    return (per_token * w).sum() / w.sum().clamp_min(1.0)
