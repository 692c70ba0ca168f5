"""Dense readouts of the image tower (`encode_patches(readout=...)`) against references written out by hand."""

import pytest
import torch
import torch.nn.functional as F

from sfclip.models import create_model
from sfclip.models.vit import READOUTS


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("test-tiny").eval()
    with torch.no_grad():  # non-zero biases and LayerNorm affines, so that a dropped term would show
        for p in m.visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _before_last(v, images):
    x, _, grid = v.embed(images, None, "replace", None)
    x = v.ln_pre(x)
    for blk in v.blocks[:-1]:
        x = blk(x)
    return x, grid  # (B, 1+N, D)


def _heads(t, H):  # (B, N, D) -> (B, H, N, Dh)
    B, N, D = t.shape
    return t.view(B, N, H, D // H).transpose(1, 2)


def _reference(v, images, readout):
    """The readouts from their papers' description, with explicit matrices."""
    x, (h, w) = _before_last(v, images)
    blk = v.blocks[-1]
    a, H, D = blk.attn, blk.attn.num_heads, x.shape[-1]
    y = F.layer_norm(x, (D,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    wq, wk, wv = a.qkv.weight.split(D)
    bq, bk, bv = a.qkv.bias.split(D)
    q, val = y @ wq.T + bq, y @ wv.T + bv  # (B, 1+N, D)
    if readout == "maskclip":
        out = x + (val @ a.proj.weight.T + a.proj.bias)  # each token's own value, residual kept
        z = F.layer_norm(out, (D,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        out = out + blk.mlp.fc2(F.gelu(blk.mlp.fc1(z)))
    else:  # clearclip: query-query attention, no residual, no MLP
        qh, vh = _heads(q, H), _heads(val, H)
        att = torch.softmax(qh @ qh.transpose(-1, -2) / (D // H) ** 0.5, dim=-1)  # (B, H, 1+N, 1+N)
        mixed = (att @ vh).transpose(1, 2).reshape(x.shape)
        out = mixed @ a.proj.weight.T + a.proj.bias
    out = F.layer_norm(out, (D,), v.norm.weight, v.norm.bias, v.norm.eps)[:, 1:]
    e = F.normalize(out @ v.proj.weight.T, dim=-1)
    return e.view(images.shape[0], h, w, -1)


def test_plain_is_the_trained_path(model):
    images = torch.randn(2, 3, model.visual.image_size, model.visual.image_size)
    with torch.no_grad():
        got = model.encode_patches(images, readout="plain")
        out = model.visual(images)
        want = F.normalize(model.visual.proj(out["patch"]), dim=-1)
    assert got.shape == (2, *out["grid"], want.shape[-1])
    torch.testing.assert_close(got.flatten(1, 2), want)
    torch.testing.assert_close(got, model.encode_patches(images))  # the default


@pytest.mark.parametrize("readout", ["maskclip", "clearclip"])
def test_readout_matches_the_hand_computed_reference(model, readout):
    images = torch.randn(2, 3, model.visual.image_size, model.visual.image_size)
    with torch.no_grad():
        got = model.encode_patches(images, readout=readout)
        want = _reference(model.visual, images, readout)
        plain = model.encode_patches(images)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # a different readout, not the plain one by another name


def test_unknown_readout_is_named(model):
    with pytest.raises(ValueError, match="readout must be one of"):
        model.encode_patches(torch.randn(1, 3, model.visual.image_size, model.visual.image_size), readout="sclip")
    assert READOUTS == ("plain", "maskclip", "clearclip")
