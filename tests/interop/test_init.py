"""`student.init` against the real packages: a student started from an OpenCLIP folder that open_clip_torch
itself built and saved encodes images and token ids as that OpenCLIP model does, and one started from a timm
ViT gives timm's class and patch tokens (fp32, 1e-5). Runs in .venv-interop (`make interop-test`)."""

from __future__ import annotations

import json

import pytest
import torch

open_clip = pytest.importorskip("open_clip", reason="needs open_clip_torch (make interop-test)")
timm = pytest.importorskip("timm", reason="needs timm (make interop-test)")

from safetensors.torch import save_file  # noqa: E402

from sfclip.build import StudentConfig, build_student  # noqa: E402
from sfclip.errors import InteropError  # noqa: E402
from sfclip.interop import init_student  # noqa: E402
from sfclip.models import SFCLIP, resolve_model_config  # noqa: E402

pytestmark = pytest.mark.interop

VOCAB, CTX = 500, 16
OPEN_CLIP_CFG = {  # OpenCLIP's own defaults otherwise: ln_pre on, LayerNorm eps 1e-5, GELU, causal, argmax pool
    "embed_dim": 48,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 96, "layers": 2, "head_width": 24},
    "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": 64, "heads": 4, "layers": 2},
}
# The same model in sfclip terms; the end-of-text id is the largest (OpenCLIP's argmax pooling).
SFCLIP_OVERRIDES = {
    "embed_dim": 48, "vision.image_size": 64, "vision.patch_size": 8, "vision.width": 96, "vision.layers": 2,
    "vision.heads": 4, "vision.ln_pre": True, "vision.norm_eps": 1e-5, "text.context_length": CTX,
    "text.vocab_size": VOCAB, "text.width": 64, "text.heads": 4, "text.layers": 2, "text.causal": True,
    "text.pool": "eos", "text.eos_id": VOCAB - 1, "text.pad_id": 0,
}


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Random LayerNorm weights and biases too, so that a wrong map cannot go unseen."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def _token_ids(batch: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    ids = torch.zeros(batch, CTX, dtype=torch.long)
    for row, length in enumerate([3, 7, 12, CTX - 1][:batch]):
        ids[row, :length] = torch.randint(1, VOCAB - 1, (length,), generator=g)
        ids[row, length] = VOCAB - 1
    return ids


@pytest.fixture(scope="module")
def open_clip_folder(tmp_path_factory):
    """An OpenCLIP model built and saved the way its hub folders are: config + open_clip_model.safetensors."""
    folder = tmp_path_factory.mktemp("open_clip_model")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CFG}))
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights yet: OpenCLIP's own initialisation
    _perturb(model, 0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def test_student_from_open_clip_encodes_as_open_clip(open_clip_folder, tmp_path):
    oc = open_clip.create_model(f"local-dir:{open_clip_folder}").eval()
    scfg = StudentConfig(model="vit-demo-8", overrides=SFCLIP_OVERRIDES, text_embedding="own",
                         init=f"open_clip:{open_clip_folder}")

    class Tok:  # the ids above are the test's own; build_student only reads the special ids and the size
        pad_id, eos_id, vocab_size = 0, VOCAB - 1, VOCAB

    sf = build_student(scfg, {}, Tok()).eval()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ids = _token_ids()
    with torch.no_grad():
        torch.testing.assert_close(sf.encode_image(images), oc.encode_image(images, normalize=True),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(sf.encode_text(ids), oc.encode_text(ids, normalize=True), atol=1e-5, rtol=0)
        torch.testing.assert_close(sf.logit_scale, oc.logit_scale)
    # A plain state-dict file works too, tensors only.
    torch.save(oc.state_dict(), tmp_path / "weights.pt")
    fresh = SFCLIP(resolve_model_config("vit-demo-8", SFCLIP_OVERRIDES)).eval()
    report = init_student(fresh, f"open_clip:{tmp_path / 'weights.pt'}")
    assert report.not_loaded == [] and report.unused == [] and report.mismatched == []
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(images), sf.encode_image(images), atol=1e-6, rtol=0)


def test_open_clip_options_that_shapes_do_not_show_are_checked(open_clip_folder):
    wrong_eps = {**SFCLIP_OVERRIDES, "vision.norm_eps": 1e-6}
    with pytest.raises(InteropError, match=r"vision LayerNorm eps is 1e-05 in the source: set vision\.norm_eps"):
        init_student(SFCLIP(resolve_model_config("vit-demo-8", wrong_eps)), f"open_clip:{open_clip_folder}")
    no_ln_pre = {**SFCLIP_OVERRIDES, "vision.ln_pre": False}
    with pytest.raises(InteropError, match=r"visual\.ln_pre\.weight.*set vision\.ln_pre=true"):
        init_student(SFCLIP(resolve_model_config("vit-demo-8", no_ln_pre)), f"open_clip:{open_clip_folder}",
                     towers="vision")


TIMM_OVERRIDES = {"vision.image_size": 64, "vision.patch_size": 8, "vision.width": 192, "vision.layers": 2,
                  "vision.heads": 3}


def test_student_from_timm_gives_timm_tokens(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=2,
                            num_classes=10).eval()
    _perturb(vit, 1)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    sf = SFCLIP(resolve_model_config("vit-demo-8", TIMM_OVERRIDES)).eval()
    report = init_student(sf, f"timm:{tmp_path / 'vit.safetensors'}", towers="vision")
    assert report.ignored == ["head.bias", "head.weight"] and report.new == ["visual.proj.weight"]
    assert report.not_loaded == [] and report.unused == []
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = vit.forward_features(images)  # (B, 1+N, D) after the final norm
        got = sf.visual(images)
    torch.testing.assert_close(got["cls"], want[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got["patch"], want[:, 1:], atol=1e-5, rtol=0)


def test_timm_layers_sfclip_lacks_are_named(tmp_path):
    """A mean-pooled timm ViT normalizes after pooling (fc_norm): strict init refuses and names it."""
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=2,
                            global_pool="avg")
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    sf = SFCLIP(resolve_model_config("vit-demo-8", TIMM_OVERRIDES))
    with pytest.raises(InteropError, match=r"unused in the source: fc_norm\.bias, fc_norm\.weight"):
        init_student(sf, f"timm:{tmp_path / 'vit.safetensors'}", towers="vision")
    with pytest.raises(InteropError, match="image tower only"):
        init_student(sf, f"timm:{tmp_path / 'vit.safetensors'}")
