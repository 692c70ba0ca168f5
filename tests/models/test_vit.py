"""The image tower: replace and drop masking against plain references, position interpolation."""

import pytest
import torch

from sfclip.masking import random_patch_mask
from sfclip.models import VisionConfig, VisionTransformer
from sfclip.models.layers import Block


def tiny_vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = VisionConfig(image_size=32, patch_size=8, width=32, layers=2, heads=4, **kw)
    return VisionTransformer(cfg, embed_dim=16).double()


def reference_forward(vit: VisionTransformer, images, mask=None, visible=None):
    """Plain loop: mask-token substitution, and hiding tokens from attention via an explicit key mask."""
    x = vit.patch_embed(images).flatten(2).transpose(1, 2)
    if mask is not None:
        x = torch.where(mask[..., None], vit.mask_token, x)
    x = x + vit.pos_embed[:, 1:]
    x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], 1)
    attn_mask = None
    if visible is not None:
        keys = torch.cat([torch.ones(x.shape[0], 1, dtype=torch.bool), visible], 1)
        attn_mask = keys[:, None, None, :]
    for blk in vit.blocks:
        x = blk(x, attn_mask=attn_mask)
    return vit.norm(x)


def test_replace_matches_reference_forward_and_backward():
    vit = tiny_vit()
    images = torch.randn(3, 3, 32, 32, dtype=torch.double)
    mask = random_patch_mask(3, 16, 6, generator=torch.Generator().manual_seed(1))
    out = vit(images, mask, "replace")
    ref = reference_forward(vit, images, mask)
    torch.testing.assert_close(out["patch"], ref[:, 1:])
    torch.testing.assert_close(out["cls"], ref[:, 0])
    g = torch.randn_like(out["patch"])
    got = torch.autograd.grad(out["patch"], vit.mask_token, g)[0]
    want = torch.autograd.grad(ref[:, 1:], vit.mask_token, g)[0]
    torch.testing.assert_close(got, want)
    assert got.abs().sum() > 0  # the mask token is learned


def test_drop_equals_full_sequence_with_hidden_tokens():
    """Dropping patches must equal running every token while masking the dropped ones out as keys,
    at the kept positions, forward and backward."""
    vit = tiny_vit()
    images = torch.randn(2, 3, 32, 32, dtype=torch.double, requires_grad=True)
    mask = random_patch_mask(2, 16, 8, generator=torch.Generator().manual_seed(2))
    out = vit(images, mask, "drop", num_keep=8)
    keep = out["keep_idx"]  # (B, K)
    assert keep.shape == (2, 8)
    assert not mask.gather(1, keep).any()  # kept indices are exactly the unmasked ones
    assert torch.all(keep[:, 1:] > keep[:, :-1])  # in their original order
    ref = reference_forward(vit, images, visible=~mask)
    ref_kept = ref[:, 1:].gather(1, keep[..., None].expand(-1, -1, ref.shape[-1]))
    torch.testing.assert_close(out["patch"], ref_kept)
    torch.testing.assert_close(out["cls"], ref[:, 0])
    g = torch.randn_like(out["patch"])
    got = torch.autograd.grad(out["patch"], images, g)[0]
    want = torch.autograd.grad(ref_kept, images, g)[0]
    torch.testing.assert_close(got, want)


def test_drop_without_num_keep_checks_equal_counts():
    vit = tiny_vit()
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, :5] = True
    with pytest.raises(ValueError, match="same number of kept patches"):
        vit(torch.randn(2, 3, 32, 32, dtype=torch.double), mask, "drop")
    mask[1, 4] = False
    assert vit(torch.randn(2, 3, 32, 32, dtype=torch.double), mask, "drop")["patch"].shape[1] == 12


def test_bad_mask_shape_and_mode_fail_clearly():
    vit = tiny_vit()
    with pytest.raises(ValueError, match="expected"):
        vit(torch.randn(1, 3, 32, 32, dtype=torch.double), torch.zeros(1, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask_mode"):
        vit(torch.randn(1, 3, 32, 32, dtype=torch.double), torch.zeros(1, 16, dtype=torch.bool), "zero")


def test_position_embeddings_interpolate_for_other_sizes():
    vit = tiny_vit()
    out = vit(torch.randn(2, 3, 48, 48, dtype=torch.double))
    assert out["grid"] == (6, 6) and out["patch"].shape == (2, 36, 32)
    assert torch.isfinite(out["pooled"]).all()


def test_mean_pool_option():
    vit = tiny_vit(pool="mean")
    out = vit(torch.randn(2, 3, 32, 32, dtype=torch.double))
    torch.testing.assert_close(out["pooled"], vit.proj(out["patch"].mean(1)))


def test_grad_checkpointing_gives_same_gradients():
    vit = tiny_vit()
    images = torch.randn(2, 3, 32, 32, dtype=torch.double)
    vit(images)["pooled"].sum().backward()
    ref = [p.grad.clone() for p in vit.parameters() if p.grad is not None]
    vit.zero_grad()
    vit.grad_checkpointing = True
    vit(images)["pooled"].sum().backward()
    got = [p.grad for p in vit.parameters() if p.grad is not None]
    assert len(ref) == len(got)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b)


def test_block_is_pre_norm():
    blk = Block(8, 2).double()
    x = torch.randn(1, 3, 8, dtype=torch.double)
    h = x + blk.attn(blk.norm1(x))
    torch.testing.assert_close(blk(x), h + blk.mlp(blk.norm2(h)))
