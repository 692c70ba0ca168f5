"""Every registered preset at tiny size: shapes, no NaNs, gradients where trainable and nowhere else."""

import pytest
import torch

import sfclip
from sfclip.models import HeadConfig

TINY = {"vision.width": 32, "vision.heads": 2, "vision.layers": 1, "text.width": 32, "text.heads": 2,
        "text.layers": 1, "text.vocab_size": 50, "embed_dim": 16}


@pytest.mark.parametrize("name", sfclip.list_models())
def test_preset_at_tiny_size(name):
    cfg = sfclip.models.model_config(name)
    p = cfg.vision.patch_size
    overrides = dict(TINY, **{"vision.image_size": 4 * p})
    overrides["text.embedding"] = "inherited"
    overrides["text.embed_width"] = 12
    model = sfclip.create_model(name, **overrides)
    assert model.cfg.vision.patch_size == p and model.cfg.name == name
    B, T = 2, min(cfg.text.context_length, 10)
    images = torch.randn(B, 3, 4 * p, 4 * p)
    ids = torch.randint(1, 50, (B, T))
    img, txt, scale = model(images, ids)
    assert img.shape == (B, 16) and txt.shape == (B, 16)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(B))
    assert model.encode_patches(images).shape == (B, 4, 4, 16)
    (img @ txt.T * scale).sum().backward()
    for n, prm in model.named_parameters():
        if n.startswith("heads.") or n in ("logit_bias", "visual.mask_token"):
            continue  # used only by distillation / SigLIP / masking
        if prm.requires_grad:
            assert prm.grad is not None and torch.isfinite(prm.grad).all(), n
        else:
            assert prm.grad is None, n
    assert not model.text.token_embedding.weight.requires_grad


def test_real_size_parameter_counts():
    """The paper's student: ViT-B/16 image tower ~86M parameters, as in CLIP."""
    m = sfclip.create_model("vit-b-16")
    n = sum(p.numel() for p in m.visual.parameters())
    assert 85e6 < n < 88e6, n


def test_heads_from_config():
    model = sfclip.create_model("test-tiny", heads=[{"name": "dino", "tower": "vision", "width": 10, "kind": "mlp"},
                                                  {"name": "e5", "tower": "text", "width": 7}])
    assert isinstance(model.cfg.heads[0], HeadConfig)
    assert model.heads["dino"](torch.randn(2, 5, 32)).shape == (2, 5, 10)
    assert model.heads["e5"](torch.randn(2, 5, 32)).shape == (2, 5, 7)


def test_unknown_model_and_bad_overrides():
    with pytest.raises(ValueError, match="unknown model"):
        sfclip.create_model("vit-z-99")
    with pytest.raises(ValueError, match="nope"):
        sfclip.create_model("test-tiny", **{"vision.nope": 1})
    with pytest.raises(ValueError, match="patch_size"):
        sfclip.create_model("test-tiny", **{"vision.image_size": 30})
