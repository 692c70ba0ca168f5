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


BLOCK_ATTEMPTS = 10  # BEiT: tries per block before giving up on blocks


def block_round(mask: np.ndarray, count: np.ndarray, active: np.ndarray, num_masked: int, min_block: int,
                draws: np.ndarray, min_aspect: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One round of BEiT's block masking for every row at once: each active row tries `BLOCK_ATTEMPTS`
    random blocks in order and keeps the first that covers between 1 and its remaining budget of new
    patches; a row with no such block stops.

    `mask` (B, h, w) bool, `count` (B,) masked so far, `active` (B,) bool; `draws` (4, B, A) uniforms in
    [0, 1) for area, log-aspect, top and left. Returns the updated (mask, count, active). Patches already
    under a candidate block are read off a summed-area table, so no candidate is ever drawn out.
    """
    _, h, w = mask.shape
    budget = (num_masked - count)[:, None].astype(np.float64)  # (B, 1)
    lo = np.minimum(min_block, budget)
    area = lo + draws[0] * (budget - lo)  # (B, A)
    log_lo, log_hi = math.log(min_aspect), math.log(1 / min_aspect)
    aspect = np.exp(log_lo + draws[1] * (log_hi - log_lo))
    bh = np.rint(np.sqrt(area * aspect)).astype(np.int64)  # round half to even, as Python's round
    bw = np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (bh > 0) & (bh <= h) & (bw > 0) & (bw <= w)
    bh, bw = np.clip(bh, 0, h), np.clip(bw, 0, w)  # blocks that do not fit are never taken; keep indices valid
    top = np.floor(draws[2] * (h - bh + 1)).astype(np.int64)  # integers(0, h - bh + 1)
    left = np.floor(draws[3] * (w - bw + 1)).astype(np.int64)
    rows = np.flatnonzero(active)
    table = np.zeros((len(rows), h + 1, w + 1), dtype=np.int32)  # summed-area table of each active row
    table[:, 1:, 1:] = mask[rows].cumsum(1, dtype=np.int32).cumsum(2, dtype=np.int32)
    r = np.arange(len(rows))[:, None]
    t, b, lf, rt = top[rows], (top + bh)[rows], left[rows], (left + bw)[rows]  # (n, A)
    covered = table[r, b, rt] - table[r, t, rt] - table[r, b, lf] + table[r, t, lf]
    new = (bh * bw)[rows] - covered  # patches each candidate would add
    ok = fits[rows] & (new > 0) & (new <= budget[rows])
    took = ok.any(1)
    first = ok.argmax(1)[took]  # the first acceptable attempt
    idx = rows[took]
    t0, t1 = top[idx, first], (top + bh)[idx, first]
    l0, l1 = left[idx, first], (left + bw)[idx, first]
    in_rows = (np.arange(h) >= t0[:, None]) & (np.arange(h) < t1[:, None])  # (m, h)
    in_cols = (np.arange(w) >= l0[:, None]) & (np.arange(w) < l1[:, None])  # (m, w)
    mask[idx] |= in_rows[:, :, None] & in_cols[:, None, :]
    count = count.copy()
    count[idx] += new[took, first]
    active = np.zeros_like(active)
    active[idx] = count[idx] < num_masked
    return mask, count, active


def fill_random(flat: np.ndarray, num_masked: int, noise: np.ndarray) -> np.ndarray:
    """Top every row of `flat` (B, N) up to `num_masked` with the free patches of lowest `noise` (B, N)."""
    need = num_masked - flat.sum(1)  # (B,)
    order = np.argsort(np.where(flat, np.inf, noise), axis=1, kind="stable")  # free patches first
    pick = np.arange(flat.shape[1])[None] < need[:, None]  # (B, N): the first `need` of each row
    np.put_along_axis(flat, order, np.take_along_axis(flat, order, 1) | pick, axis=1)
    return flat


def block_patch_mask(batch: int, grid: tuple[int, int], num_masked: int, rng: np.random.Generator,
                     min_block_frac: float = 0.08, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, h*w) bool of BEiT-style rectangular blocks, exactly `num_masked` True per row.

    All rows advance together, one block per round, so a batch costs a handful of array operations
    instead of a Python loop per image; rows that no block fits are finished with random patches.
    """
    h, w = grid
    min_block = max(1, int(round(min_block_frac * h * w)))
    mask = np.zeros((batch, h, w), dtype=bool)
    count = np.zeros(batch, dtype=np.int64)
    active = np.full(batch, num_masked > 0)
    while active.any():
        mask, count, active = block_round(mask, count, active, num_masked, min_block,
                                          rng.random((4, batch, BLOCK_ATTEMPTS)))
    flat = fill_random(mask.reshape(batch, h * w), num_masked, rng.random((batch, h * w)))
    return torch.from_numpy(flat).to(device)


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
