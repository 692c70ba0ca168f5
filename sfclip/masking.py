"""Masks for masked distillation: random and block-wise patch masks, BERT-style caption masks.

Patch masks always hold exactly `round(ratio * N)` masked patches per row, so the FLIP-style drop path
can gather a dense (B, K) set of kept patches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ImageMaskConfig", "TextMaskConfig", "random_patch_mask", "block_patch_mask", "patch_mask", "bert_mask"]


@dataclass
class ImageMaskConfig:
    kind: str = "block"  # block (BEiT, EVA-02) | random (MAE, FLIP)
    ratio: float = 0.4  # EVA-02 / BEiT: 40% of the patches
    mode: str = "replace"  # replace masked patches with a mask token (EVA-02) | drop them (FLIP)
    min_block_frac: float = 0.08  # smallest block as a fraction of the grid (BEiT: 16 of 196 patches)

    def __post_init__(self) -> None:
        if self.kind not in ("block", "random"):
            raise ValueError(f"image_mask.kind must be 'block' or 'random', got {self.kind!r}")
        if self.mode not in ("replace", "drop"):
            raise ValueError(f"image_mask.mode must be 'replace' or 'drop', got {self.mode!r}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"image_mask.ratio must be in [0, 1), got {self.ratio}")

    def num_masked(self, n: int) -> int:
        return int(round(self.ratio * n))


@dataclass
class TextMaskConfig:
    prob: float = 0.15  # BERT
    mask_frac: float = 0.8  # of the selected: replaced by the mask token
    random_frac: float = 0.1  # replaced by a random token; the rest stay unchanged

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"text_mask.prob must be in [0, 1], got {self.prob}")
        if self.mask_frac < 0 or self.random_frac < 0 or self.mask_frac + self.random_frac > 1.0:
            raise ValueError("text_mask.mask_frac + text_mask.random_frac must lie in [0, 1]")


def random_patch_mask(batch: int, n: int, num_masked: int, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, N) bool with exactly `num_masked` True per row, uniformly placed."""
    noise = torch.rand(batch, n, device=device, generator=generator)  # (B, N)
    idx = noise.argsort(dim=1)[:, :num_masked]
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    return mask.scatter_(1, idx, True)


def _block_mask_one(h: int, w: int, num_masked: int, min_block: int, rng: np.random.Generator,
                    min_aspect: float = 0.3) -> np.ndarray:
    """BEiT's block-wise masking for one image, topped up or trimmed to exactly `num_masked`."""
    mask = np.zeros((h, w), dtype=bool)
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    count = 0
    while count < num_masked:
        budget = num_masked - count
        delta = 0
        for _ in range(10):
            area = rng.uniform(min(min_block, budget), budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < bh <= h and 0 < bw <= w:
                top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
                new = bh * bw - mask[top:top + bh, left:left + bw].sum()
                if 0 < new <= budget:
                    mask[top:top + bh, left:left + bw] = True
                    delta = int(new)
                    break
        if delta == 0:
            break
        count += delta
    flat = mask.reshape(-1)
    if count < num_masked:  # no block fits the remainder: finish with random patches
        free = np.flatnonzero(~flat)
        flat[rng.choice(free, num_masked - count, replace=False)] = True
    return flat


def block_patch_mask(batch: int, grid: tuple[int, int], num_masked: int, rng: np.random.Generator,
                     min_block_frac: float = 0.08, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, h*w) bool of BEiT-style rectangular blocks, exactly `num_masked` True per row."""
    h, w = grid
    min_block = max(1, int(round(min_block_frac * h * w)))
    rows = np.stack([_block_mask_one(h, w, num_masked, min_block, rng) for _ in range(batch)])
    return torch.from_numpy(rows).to(device)


def patch_mask(cfg: ImageMaskConfig, batch: int, grid: tuple[int, int], rng: np.random.Generator,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The configured patch mask (B, N); seeded by `rng` so runs and resumes are reproducible."""
    n = grid[0] * grid[1]
    k = cfg.num_masked(n)
    if cfg.kind == "random":
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return random_patch_mask(batch, n, k, generator=g).to(device)
    return block_patch_mask(batch, grid, k, rng, cfg.min_block_frac, device)


def bert_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: list[int], mask_id: int,
              vocab_size: int, cfg: TextMaskConfig, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: returns (masked ids (B, T), selected (B, T) bool).

    Only real, non-special tokens are eligible; every row with an eligible token gets at least one.
    Of the selected tokens, `mask_frac` become the mask token, `random_frac` a random non-special token,
    and the rest stay unchanged (but are still predicted).
    """
    device = input_ids.device
    special = torch.tensor(special_ids, device=device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special)  # (B, T)
    u = torch.rand(input_ids.shape, generator=generator).to(device)  # (B, T)
    selected = (u < cfg.prob) & eligible
    # Rows where the draw picked nothing still get their most likely eligible token.
    fallback = torch.zeros_like(selected).scatter_(1, torch.where(eligible, u, 2.0).argmin(1, keepdim=True), True)
    selected = selected | (fallback & eligible & ~selected.any(1, keepdim=True))
    action = torch.rand(input_ids.shape, generator=generator).to(device)
    to_mask = selected & (action < cfg.mask_frac)
    to_random = selected & (action >= cfg.mask_frac) & (action < cfg.mask_frac + cfg.random_frac)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator).to(device)
    to_random &= ~torch.isin(random_ids, special)  # a drawn special id leaves the token unchanged instead
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(to_random, random_ids, out)
    return out, selected
