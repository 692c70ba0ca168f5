"""The student image tower: a pre-norm ViT with a class token that can replace or drop masked patches."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block, run_blocks

READOUTS = ("plain", "maskclip", "clearclip")
__all__ = ["READOUTS", "VisionConfig", "VisionTransformer", "interpolate_pos_embed"]

_MASK_MODES = ("replace", "drop")


@dataclass
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    pool: str = "cls"  # cls | mean: what the joint-space embedding is taken from
    # A LayerNorm on the embedded sequence before the first block (OpenAI CLIP / OpenCLIP's `ln_pre`, timm's
    # `norm_pre`); off by default (timm and DINOv2 ViTs have none). On to start from such weights.
    ln_pre: bool = False
    norm_eps: float = 1e-6  # every LayerNorm of the tower (timm / DINOv2: 1e-6; OpenCLIP: 1e-5)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"vision.image_size {self.image_size} is not a multiple of "
                             f"vision.patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"vision.width {self.width} is not divisible by vision.heads {self.heads}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"vision.pool must be 'cls' or 'mean', got {self.pool!r}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a square patch position table (1, G*G, D) to `grid` (bicubic, as DINOv2 and timm do)."""
    n, d = pos.shape[1], pos.shape[2]
    g = math.isqrt(n)
    if (g, g) == tuple(grid):
        return pos
    pos = pos.reshape(1, g, g, d).permute(0, 3, 1, 2)  # (1, D, G, G)
    pos = F.interpolate(pos.float(), size=grid, mode="bicubic", align_corners=False).to(pos.dtype)
    return pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d)


class VisionTransformer(nn.Module):
    """ViT image tower.

    `forward(images, mask, mask_mode)`: `mask` (B, N) is True where a patch is masked. "replace" swaps
    masked patch embeddings for a learned mask token (BEiT / EVA-02); "drop" removes them before the
    encoder (FLIP), so compute scales with the kept fraction, and reports `keep_idx` (B, K).
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_size = cfg.image_size
        self.patch_size = cfg.patch_size
        self.width = cfg.width
        d, n = cfg.width, cfg.grid**2
        self.patch_embed = nn.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.ln_pre = nn.LayerNorm(d, eps=cfg.norm_eps) if cfg.ln_pre else nn.Identity()
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, eps=cfg.norm_eps) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.proj = nn.Linear(d, embed_dim, bias=False)
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def embed(self, images: torch.Tensor, mask: torch.Tensor | None, mask_mode: str,
              num_keep: int | None) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
        """Patchify, apply the mask, add positions and prepend the class token."""
        x = self.patch_embed(images)  # (B, D, h, w)
        B, D, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        pos = self.pos_embed
        patch_pos = interpolate_pos_embed(pos[:, 1:], (h, w))  # (1, N, D)
        keep_idx = None
        if mask is not None:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"patch mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:2])} "
                                 "for this input")
            if mask_mode == "replace":
                x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
            elif mask_mode != "drop":
                raise ValueError(f"mask_mode must be one of {_MASK_MODES}, got {mask_mode!r}")
        x = x + patch_pos
        if mask is not None and mask_mode == "drop":
            if num_keep is None:  # costs a host sync; the objective passes it
                counts = (~mask).sum(1)
                if int(counts.min()) != int(counts.max()):
                    raise ValueError("drop mode needs the same number of kept patches in every row")
                num_keep = int(counts[0])
            # Stable sort puts kept (False) positions first, in their original order.
            keep_idx = mask.to(torch.uint8).argsort(dim=1, stable=True)[:, :num_keep]  # (B, K)
            x = x.gather(1, keep_idx.unsqueeze(-1).expand(-1, -1, D))  # (B, K, D)
        cls = (self.cls_token + pos[:, :1]).expand(B, -1, -1)  # (B, 1, D)
        return torch.cat([cls, x], dim=1), keep_idx, (h, w)

    def dense(self, images: torch.Tensor, readout: str = "plain") -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens for dense use, after the final norm: ((B, N, D), grid). `readout` (`READOUTS`) says how
        the last block makes them; the class token and every earlier block are as in `forward`.

        - `plain`: the last block as trained (what `forward` returns);
        - `maskclip`: the last block's value path only: each token attends to itself, so
          x + proj(v(norm1(x))), then the block's MLP with its residual (MaskCLIP, Zhou et al., ECCV 2022);
        - `clearclip`: the last block's attention with query-query similarities, softmax(q q^T / sqrt(d)) v,
          through the output projection, with no residual and no MLP (ClearCLIP, Lan et al., ECCV 2024).
        """
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        x, _, grid = self.embed(images, None, "replace", None)
        x = self.ln_pre(x)  # (B, 1+N, D)
        if readout == "plain":
            x = run_blocks(self.blocks, x, False)
        else:
            x = run_blocks(self.blocks[:-1], x, False)
            x = _last_block_readout(self.blocks[-1], x, readout)
        return self.norm(x)[:, 1:], grid

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None, mask_mode: str = "replace",
                num_keep: int | None = None) -> dict:
        x, keep_idx, grid = self.embed(images, mask, mask_mode, num_keep)
        x = self.ln_pre(x)  # (B, 1+K, D)
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        x = self.norm(x)  # (B, 1+K, D)
        cls, patch = x[:, 0], x[:, 1:]
        pooled = cls if self.cfg.pool == "cls" else patch.mean(1)
        return {"pooled": self.proj(pooled), "cls": cls, "patch": patch, "keep_idx": keep_idx, "grid": grid}


def _last_block_readout(blk, x: torch.Tensor, readout: str) -> torch.Tensor:
    """The last block under a training-free dense readout (see `VisionTransformer.dense`): (B, 1+N, D)."""
    attn = blk.attn
    B, N, D = x.shape
    H = attn.num_heads
    qkv = attn.qkv(blk.norm1(x)).view(B, N, 3, H, D // H)  # (B, N, 3, H, Dh)
    q, _, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
    if readout == "maskclip":
        out = attn.proj(v.transpose(1, 2).reshape(B, N, D))  # each token's own value
        x = x + out
        return x + blk.mlp(blk.norm2(x))
    mixed = torch.nn.functional.scaled_dot_product_attention(q, q, v)  # (B, H, N, Dh): q-q attention
    return attn.proj(mixed.transpose(1, 2).reshape(B, N, D))
