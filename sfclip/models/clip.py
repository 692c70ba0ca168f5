"""The SF-CLIP student: image tower, text tower, temperature and per-teacher distillation heads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .heads import DistillHead, HeadConfig
from .text import TextConfig, TextTransformer, trim_padding
from .vit import VisionConfig, VisionTransformer

__all__ = ["ModelConfig", "SFCLIP"]


@dataclass
class ModelConfig:
    name: str = "vit-b-16"
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    init_logit_scale: float = math.log(1 / 0.07)  # CLIP
    init_logit_bias: float = -10.0  # SigLIP
    heads: list[HeadConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {self.embed_dim}")
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ValueError(f"distillation head names must be unique, got {names}")


class SFCLIP(nn.Module):
    """Dual encoder with the OpenCLIP surface (`encode_image`, `encode_text`, `logit_scale`) plus dense and
    distillation outputs. Single device, no loss code: the objective owns the science of a step."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim)
        self.text = TextTransformer(cfg.text, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
        tower_width = {"vision": cfg.vision.width, "text": cfg.text.width}
        self.heads = nn.ModuleDict({h.name: DistillHead(h, tower_width[h.tower]) for h in cfg.heads})

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.grad_checkpointing = enable
        self.text.grad_checkpointing = enable

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) -> (B, E)."""
        x = self.visual(images)["pooled"]
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    normalize: bool = True) -> torch.Tensor:
        """(B, T) token ids -> (B, E); a missing attention mask is derived from the pad id. Trailing
        all-padding columns are skipped (the pooled output does not depend on them)."""
        attention_mask = self.text.key_padding_mask(input_ids, attention_mask)
        x = self.text(*trim_padding(input_ids, attention_mask))["pooled"]
        return F.normalize(x, dim=-1) if normalize else x

    def forward_features(self, images: torch.Tensor) -> dict:
        """Dense features: {"cls": (B, D), "patch": (B, N, D), "grid": (h, w)}."""
        out = self.visual(images)
        return {"cls": out["cls"], "patch": out["patch"], "grid": out["grid"]}

    def encode_patches(self, images: torch.Tensor, normalize: bool = True, readout: str = "plain") -> torch.Tensor:
        """Patch tokens taken into the joint space through the image projection: (B, h, w, E).

        `readout` is how the last block makes them (`VisionTransformer.dense`): `plain` (as trained),
        `maskclip` (value path only) or `clearclip` (query-query attention, no residual, no MLP). Unlike
        `forward_features`, which returns (B, N, D) tokens before the projection, this is on the grid and in
        the joint space, ready to score against text embeddings.
        """
        patch, (h, w) = self.visual.dense(images, readout)  # (B, N, D)
        x = self.visual.proj(patch)  # (B, N, E)
        x = F.normalize(x, dim=-1) if normalize else x
        return x.view(x.shape[0], h, w, -1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """OpenCLIP-style: normalized image and text features and the temperature scale."""
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), self.logit_scale.exp()
