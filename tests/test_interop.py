"""OpenCLIP layout without OpenCLIP: the name map and its folds round-trip exactly, what cannot be exported is
refused naming the layer, and `student.init` starts a student from an exported folder with the same outputs.
The same folders against the real open_clip / timm packages: tests/interop (make interop-test)."""

from __future__ import annotations

import json

import pytest
import torch

from sfclip.build import StudentConfig, build_student
from sfclip.checkpoint import save_student, write_manifest
from sfclip.cli import main
from sfclip.errors import InteropError
from sfclip.interop import export_open_clip, init_student
from sfclip.interop.open_clip import exportable, from_open_clip_state, to_open_clip_state
from sfclip.models import SFCLIP, resolve_model_config
from sfclip.tokenizer import load_tokenizer

CAUSAL = {"text.causal": True, "text.pool": "eos"}


def _config(tok, embedding="own", **overrides):
    text = {"text.pad_id": tok.pad_id, "text.eos_id": tok.eos_id, "text.context_length": 16}
    if embedding == "inherited":
        text.update({"text.embedding": "inherited", "text.embed_width": 48, "text.embed_norm": "scale"})
    return resolve_model_config("test-tiny", {**text, "text.vocab_size": tok.vocab_size, **overrides})


def _student(cfg, seed=0) -> SFCLIP:
    """Random weights everywhere, LayerNorm and biases included, so that a wrong map cannot go unseen."""
    torch.manual_seed(seed)
    model = SFCLIP(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        if cfg.text.embedding == "inherited":
            model.text.inherit_embeddings(torch.randn(cfg.text.vocab_size, 48) * 0.05)
    return model.eval()


def _inputs(tok):
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    text = tok(["a red dress", "two blue shoes on the grass", "x"])
    return images, text


@pytest.fixture(scope="module")
def tok(tiny_text_teacher_dir):
    return load_tokenizer(tiny_text_teacher_dir, context_length=16)


def _checkpoint(folder, model, tok):
    save_student(folder, model, tok)
    write_manifest(folder)
    return folder


@pytest.mark.parametrize("embedding", ["own", "inherited"])
def test_open_clip_names_round_trip(tok, embedding):
    """sfclip -> OpenCLIP tensors -> an own-table sfclip student: same embeddings. The patch bias moved into
    the position table and an inherited table's scale and projection moved into the token table."""
    model = _student(_config(tok, embedding, **CAUSAL))
    state = to_open_clip_state(model)
    assert "visual.conv1.weight" in state and "visual.positional_embedding" in state
    assert not any(k.startswith("heads.") or "mask_token" in k for k in state)
    back = SFCLIP(_config(tok, "own", **CAUSAL))
    mapped, unused = from_open_clip_state(state, back)
    assert unused == []
    missing, unexpected = back.load_state_dict(mapped, strict=False)
    assert sorted(missing) == ["logit_bias", "visual.mask_token"] and unexpected == []  # sfclip's own
    assert float(back.visual.patch_embed.bias.abs().max()) == 0.0
    images, text = _inputs(tok)
    with torch.no_grad():
        torch.testing.assert_close(back.eval().encode_image(images), model.encode_image(images), atol=1e-6, rtol=0)
        torch.testing.assert_close(back.encode_text(**text), model.encode_text(**text), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("overrides", "layer"), [
    ({}, "text.causal"),
    ({"text.causal": True, "text.pool": "mean"}, "text.pool"),
    ({**CAUSAL, "text.embed_norm": "layernorm"}, "text.embed_norm"),
])
def test_what_open_clip_cannot_express_is_refused_naming_the_layer(tok, overrides, layer):
    embedding = "inherited" if "text.embed_norm" in overrides else "own"
    with pytest.raises(InteropError, match=layer.replace(".", r"\.")):
        exportable(_config(tok, embedding, **overrides))


def test_cli_refusal_is_one_line(tok, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "ckpt", _student(_config(tok)), tok)
    assert main(["export", str(ckpt), "--to", "open_clip", "--out", str(tmp_path / "oc")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sfclip export: error: text tower: bidirectional") and "\n" not in err
    assert not (tmp_path / "oc").exists()


def test_export_then_init_gives_the_same_student(tok, tmp_path, capsys):
    """`sfclip export` writes the folder; `student.init=open_clip:DIR` on a fresh student of the same size loads
    every tensor (strict) and encodes images and captions as the exported student did."""
    model = _student(_config(tok, **CAUSAL))
    ckpt = _checkpoint(tmp_path / "ckpt", model, tok)
    out = tmp_path / "oc"
    assert main(["export", str(ckpt), "--to", "open_clip", "--out", str(out)]) == 0
    assert "local-dir:" in capsys.readouterr().out
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["pool_type"] == "eos"
    assert config["model_cfg"]["vision_cfg"]["norm_kwargs"] == {"eps": 1e-6}
    assert (out / "tokenizer.json").is_file()

    overrides = {**CAUSAL, "text.eos_id": tok.eos_id}
    scfg = StudentConfig(model="test-tiny", overrides=overrides, text_embedding="own", init=f"open_clip:{out}")
    fresh = build_student(scfg, {}, tok).eval()
    images, text = _inputs(tok)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(images), model.encode_image(images), atol=1e-6, rtol=0)
        torch.testing.assert_close(fresh.encode_text(**text), model.encode_text(**text), atol=1e-6, rtol=0)
        assert not torch.allclose(SFCLIP(fresh.cfg).eval().encode_image(images), model.encode_image(images))


def test_init_strict_names_what_does_not_fit(tok, tmp_path):
    model = _student(_config(tok, **CAUSAL))
    out = export_open_clip(_checkpoint(tmp_path / "ckpt", model, tok), tmp_path / "oc")
    wider = _student(_config(tok, **CAUSAL, **{"text.width": 64, "text.heads": 2}), seed=3)
    with pytest.raises(InteropError, match=r"mismatch: .*text\.pos_embed \(16, 32\) in the source, \(16, 64\) here"):
        init_student(wider, f"open_clip:{out}")
    before = wider.text.pos_embed.clone()
    report = init_student(wider, f"open_clip:{out}", strict=False)
    assert any(m.startswith("text.blocks.0.attn.qkv.weight") for m in report.mismatched)
    assert "text.pos_embed" not in report.loaded and torch.equal(wider.text.pos_embed, before)
    assert "visual.patch_embed.weight" in report.loaded  # the image tower fits and is loaded
    torch.testing.assert_close(wider.visual.patch_embed.weight, model.visual.patch_embed.weight)


def test_init_vision_only_into_an_inheriting_student(tok, tmp_path):
    """SF-CLIP students keep their text teacher's table: only the image tower comes from the source."""
    model = _student(_config(tok, **CAUSAL))
    out = export_open_clip(_checkpoint(tmp_path / "ckpt", model, tok), tmp_path / "oc")
    sf = _student(_config(tok, "inherited", **CAUSAL), seed=5)
    text_before = {k: v.clone() for k, v in sf.text.state_dict().items()}
    report = init_student(sf, f"open_clip:{out}", towers="vision")
    assert report.not_loaded == [] and report.unused == []
    assert all(k.startswith("visual.") for k in report.loaded)
    assert all(torch.equal(v, sf.text.state_dict()[k]) for k, v in text_before.items())
    with pytest.raises(InteropError, match="inherits its text teacher's table"):
        init_student(sf, f"open_clip:{out}", towers="both")


def test_init_rejects_a_source_whose_options_differ(tok, tmp_path):
    model = _student(_config(tok, **CAUSAL))
    out = export_open_clip(_checkpoint(tmp_path / "ckpt", model, tok), tmp_path / "oc")
    config = json.loads((out / "open_clip_config.json").read_text())
    config["model_cfg"]["quick_gelu"] = True
    config["model_cfg"]["vision_cfg"]["norm_kwargs"] = {"eps": 1e-5}
    (out / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(InteropError, match=r"QuickGELU.*vision\.norm_eps=1e-05"):
        init_student(_student(_config(tok, **CAUSAL)), f"open_clip:{out}")
    with pytest.raises(InteropError, match="expected open_clip:DIR"):
        init_student(model, "clip:somewhere")
