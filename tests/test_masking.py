"""Patch and caption masks: exact counts, block shape, BERT proportions, specials never touched."""

import numpy as np
import pytest
import torch

from sfclip.masking import (
    ImageMaskConfig,
    TextMaskConfig,
    bert_mask,
    block_patch_mask,
    patch_mask,
    random_patch_mask,
)


def test_random_mask_exact_count_and_seeded():
    m = random_patch_mask(5, 49, 20, generator=torch.Generator().manual_seed(0))
    assert m.shape == (5, 49) and (m.sum(1) == 20).all()
    m2 = random_patch_mask(5, 49, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, m2)
    assert not torch.equal(m[0], m[1])


@pytest.mark.parametrize("grid,k", [((14, 14), 78), ((8, 8), 26), ((4, 4), 15), ((7, 5), 1)])
def test_block_mask_exact_count(grid, k):
    m = block_patch_mask(16, grid, k, np.random.default_rng(0))
    assert m.shape == (16, grid[0] * grid[1]) and (m.sum(1) == k).all()


def test_block_mask_is_blocky():
    """Block masks have far more masked neighbours than random masks of the same density."""
    def neighbour_rate(m, h, w):
        g = m.view(-1, h, w)
        same = (g[:, 1:, :] & g[:, :-1, :]).sum() + (g[:, :, 1:] & g[:, :, :-1]).sum()
        return same.item() / g.sum().item()

    block = block_patch_mask(64, (14, 14), 78, np.random.default_rng(1))
    rand = random_patch_mask(64, 196, 78, generator=torch.Generator().manual_seed(1))
    assert neighbour_rate(block, 14, 14) > 1.3 * neighbour_rate(rand, 14, 14)


def test_patch_mask_dispatch_and_reproducible():
    for kind in ("block", "random"):
        cfg = ImageMaskConfig(kind=kind, ratio=0.5)
        a = patch_mask(cfg, 4, (6, 6), np.random.default_rng(3))
        b = patch_mask(cfg, 4, (6, 6), np.random.default_rng(3))
        assert torch.equal(a, b) and (a.sum(1) == 18).all()


def test_mask_config_validation():
    with pytest.raises(ValueError, match="image_mask.ratio"):
        ImageMaskConfig(ratio=1.0)
    with pytest.raises(ValueError, match="image_mask.mode"):
        ImageMaskConfig(mode="zero")
    with pytest.raises(ValueError, match="text_mask"):
        TextMaskConfig(mask_frac=0.9, random_frac=0.2)


def test_bert_mask_statistics_and_specials():
    PAD, CLS, SEP, MASK, V = 0, 1, 2, 3, 1000
    B, T = 400, 40
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, V, (B, T), generator=g)
    lengths = torch.randint(5, T, (B,), generator=g)
    am = (torch.arange(T)[None] < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    ids[am == 0] = PAD
    out, sel = bert_mask(ids, am, [PAD, CLS, SEP, MASK], MASK, V, TextMaskConfig(), g)
    specials = (ids == PAD) | (ids == CLS) | (ids == SEP)
    assert not sel[specials].any() and torch.equal(out[specials], ids[specials])
    assert sel.any(1).all()  # every row has something to predict
    assert torch.equal(out[~sel], ids[~sel])  # unselected tokens never change
    eligible = (~specials).sum().item()
    rate = sel.sum().item() / eligible
    assert 0.14 < rate < 0.18  # 15%, plus the at-least-one top-up on short rows
    s_in, s_out = ids[sel], out[sel]
    frac_mask = (s_out == MASK).float().mean().item()
    frac_same = (s_out == s_in).float().mean().item()
    assert 0.76 < frac_mask < 0.84
    assert 0.07 < frac_same < 0.13
    assert 0.07 < 1 - frac_mask - frac_same < 0.13  # random replacements


def test_bert_mask_rows_without_eligible_tokens():
    ids = torch.tensor([[1, 2, 0, 0], [1, 7, 2, 0]])
    am = (ids != 0).long()
    out, sel = bert_mask(ids, am, [0, 1, 2, 3], 3, 50, TextMaskConfig(prob=0.0), torch.Generator().manual_seed(0))
    assert not sel[0].any()
    assert sel[1].tolist() == [False, True, False, False]


def reference_block_mask(batch, grid, num_masked, min_block, rng, attempts=10, min_aspect=0.3):
    """BEiT's block masking written plainly, one image at a time, reading the same per-round draws
    (4, B, attempts) and top-up noise (B, N) as the batched implementation."""
    import math

    h, w = grid
    masks = np.zeros((batch, h, w), dtype=bool)
    count, active = [0] * batch, [num_masked > 0] * batch
    log_lo, log_hi = math.log(min_aspect), math.log(1 / min_aspect)
    while any(active):
        d = rng.random((4, batch, attempts))
        for b in range(batch):
            if not active[b]:
                continue
            budget, delta = num_masked - count[b], 0
            for a in range(attempts):
                lo = min(min_block, budget)
                area = lo + d[0, b, a] * (budget - lo)
                aspect = float(np.exp(log_lo + d[1, b, a] * (log_hi - log_lo)))
                bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if 0 < bh <= h and 0 < bw <= w:
                    top, left = int(d[2, b, a] * (h - bh + 1)), int(d[3, b, a] * (w - bw + 1))
                    new = bh * bw - masks[b, top:top + bh, left:left + bw].sum()
                    if 0 < new <= budget:
                        masks[b, top:top + bh, left:left + bw] = True
                        delta = int(new)
                        break
            count[b] += delta
            active[b] = delta > 0 and count[b] < num_masked
    flat = masks.reshape(batch, h * w)
    noise = rng.random((batch, h * w))
    for b in range(batch):
        free = np.flatnonzero(~flat[b])
        flat[b, free[np.argsort(noise[b, free], kind="stable")[:num_masked - flat[b].sum()]]] = True
    return torch.from_numpy(flat)


@pytest.mark.parametrize("grid,k,frac", [((14, 14), 78, 0.08), ((8, 8), 26, 0.08), ((4, 4), 15, 0.08),
                                         ((7, 5), 1, 0.08), ((6, 9), 40, 0.3), ((16, 16), 0, 0.08)])
def test_block_mask_matches_the_per_image_reference(grid, k, frac):
    """The batched rounds give exactly the masks of a plain per-image loop over the same draws."""
    min_block = max(1, int(round(frac * grid[0] * grid[1])))
    got = block_patch_mask(32, grid, k, np.random.default_rng(7), min_block_frac=frac)
    ref = reference_block_mask(32, grid, k, min_block, np.random.default_rng(7))
    assert torch.equal(got, ref)
    assert (got.sum(1) == k).all()
