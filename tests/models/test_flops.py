"""FLOPs from the configuration: a hand count for the tiny preset, and the real modules' matmul count."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sfclip.models import HeadConfig, create_model, model_config
from sfclip.models.flops import (
    EncoderShape,
    encoder_forward_flops,
    head_forward_flops,
    step_flops,
    text_forward_flops,
    vision_forward_flops,
)


def counted(fn) -> int:
    """Matmul FLOPs torch itself counts; the math attention backend runs attention as counted matmuls (the
    counter has no formula for the CPU flash kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def test_tiny_vision_and_text_by_hand():
    cfg = model_config("test-tiny")  # 32 px, patch 8 (16 patches), width 32, 2 layers, MLP 128, embed 24, ctx 16
    n, d, h = 17, 32, 128  # class token + 16 patches
    layer = 2 * n * d * 3 * d + 2 * (2 * n * n * d) + 2 * n * d * d + 2 * (2 * n * d * h)
    assert layer == 104_448 + 36_992 + 34_816 + 278_528
    patch_embed = 2 * 16 * (3 * 8 * 8) * d
    vision = 2 * layer + patch_embed + 2 * d * 24
    assert vision_forward_flops(cfg.vision, cfg.embed_dim) == vision == 1_107_712
    t = 16
    text_layer = 2 * t * d * 3 * d + 2 * (2 * t * t * d) + 2 * t * d * d + 2 * (2 * t * d * h)
    assert text_forward_flops(cfg.text, cfg.embed_dim) == 2 * text_layer + 2 * d * 24
    # 6 kept patches of 16: the encoder shrinks, the patch embedding does not.
    n6 = 7
    layer6 = 2 * n6 * d * 3 * d + 2 * (2 * n6 * n6 * d) + 2 * n6 * d * d + 2 * (2 * n6 * d * h)
    assert vision_forward_flops(cfg.vision, cfg.embed_dim, kept_patches=6) == 2 * layer6 + patch_embed + 2 * d * 24


def test_step_by_hand():
    cfg = model_config("test-tiny")
    cfg.heads = [HeadConfig(name="dino", tower="vision", width=48), HeadConfig(name="bert", tower="text", width=40)]
    B, k = 8, 2
    vis, txt = vision_forward_flops(cfg.vision, 24), text_forward_flops(cfg.text, 24)
    teacher = EncoderShape(width=48, layers=3, mlp_hidden=192, tokens=17, patch_dim=3 * 14 * 14, patches=16)
    got = step_flops(cfg, B, distill_rows=k, teachers=(teacher,))
    assert got["clean"] == 3 * B * (vis + txt)
    assert got["masked"] == 3 * k * (vis + txt)
    assert got["heads"] == 3 * k * (2 * 16 * 32 * 48 + 2 * 16 * 32 * 40)
    assert got["teachers"] == k * (3 * (8 * 17 * 48**2 + 4 * 17**2 * 48 + 4 * 17 * 48 * 192) + 2 * 16 * 588 * 48)
    assert got["contrastive"] == 3 * 4 * B * B * 24
    assert got["total"] == sum(v for key, v in got.items() if key != "total")
    plain = step_flops(cfg, B)
    assert plain["total"] == plain["clean"] + plain["contrastive"]
    # Shared view: the clean image pass is the masked one, and there is no separate masked image pass.
    shared = step_flops(cfg, B, distill_rows=k, masked_kept_patches=8, shared_view=True)
    assert shared["clean"] == 3 * B * (vision_forward_flops(cfg.vision, 24, 8) + txt)
    assert shared["masked"] == 3 * k * txt


@pytest.mark.parametrize("kept", [None, 6])
def test_vision_count_matches_the_module(kept):
    model = create_model("test-tiny")
    images = torch.randn(3, 3, 32, 32)
    mask = None
    if kept is not None:
        mask = torch.ones(3, 16, dtype=torch.bool)
        mask[:, :kept] = False
    got = counted(lambda: model.visual(images, mask, "drop", kept))
    assert got == 3 * vision_forward_flops(model.cfg.vision, model.cfg.embed_dim, kept)


@pytest.mark.parametrize("embed_width", [0, 20])
def test_text_count_matches_the_module(embed_width):
    model = create_model("test-tiny", text={"embed_width": embed_width})
    ids = torch.randint(5, 100, (2, 16))
    got = counted(lambda: model.text(ids, torch.ones_like(ids)))
    assert got == 2 * text_forward_flops(model.cfg.text, model.cfg.embed_dim)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_count_matches_the_module(kind):
    from sfclip.models import DistillHead

    cfg = HeadConfig(name="t", width=48, kind=kind, hidden=64)
    head = DistillHead(cfg, 32)
    got = counted(lambda: head(torch.randn(2, 10, 32)))
    assert got == 2 * head_forward_flops(cfg, 32, 10)


def test_encoder_count_matches_a_transformers_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    m = Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                                 patch_size=14, image_size=56)).eval()
    shape = EncoderShape(width=48, layers=2, mlp_hidden=192, tokens=17, patch_dim=3 * 14 * 14, patches=16)
    got = counted(lambda: m(pixel_values=torch.randn(1, 3, 56, 56)))
    assert got == encoder_forward_flops(shape)
