"""SDPA attention against a manual softmax(QK^T)V reference, forward and backward."""

import math

import pytest
import torch

from sfclip.models.layers import Attention


def manual_attention(attn: Attention, x, mask=None):
    B, N, D = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).view(B, N, 3, h, D // h).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // h)  # (B, H, N, N)
    allowed = torch.ones(N, N, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(B, N, D))


@pytest.mark.parametrize("with_mask", [False, True])
def test_sdpa_matches_manual(with_mask):
    torch.manual_seed(0)
    attn = Attention(16, 4).double()
    x = torch.randn(3, 7, 16, dtype=torch.double, requires_grad=True)
    mask = None
    if with_mask:
        keep = torch.ones(3, 7, dtype=torch.bool)
        keep[1, 5:] = False
        keep[2, 3:] = False
        mask = keep[:, None, None, :]
    got = attn(x, attn_mask=mask)
    ref = manual_attention(attn, x, mask)
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(got)
    (gx,) = torch.autograd.grad(got, x, g)
    (rx,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, rx)
