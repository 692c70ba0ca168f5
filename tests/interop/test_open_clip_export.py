"""`sfclip export --to open_clip` against the real open_clip_torch 3.3.0: the folder loads through
`local-dir:` as it is, and encodes real photos and captions in eight languages as sfclip does (fp32, 1e-4), for
a CLIP-form student and for an SF-CLIP student with multilingual-E5's real 250k-row table (inherited, scaled).
Runs in .venv-interop (`make interop-test`); skipped where open_clip cannot be imported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip", reason="needs open_clip_torch (make interop-test)")

from PIL import Image  # noqa: E402

import sfclip  # noqa: E402
from sfclip.checkpoint import save_student, write_manifest  # noqa: E402
from sfclip.cli import main  # noqa: E402
from sfclip.models import SFCLIP, HeadConfig, resolve_model_config  # noqa: E402
from sfclip.teachers import offline  # noqa: E402
from sfclip.tokenizer import load_tokenizer  # noqa: E402

pytestmark = pytest.mark.interop

CAPTIONS = ["a red dress on the grass", "ein rotes Kleid auf dem Gras", "une robe rouge sur l'herbe",
            "un vestido rojo sobre la hierba", "草の上の赤いドレス", "草地上的红色连衣裙", "красное платье на траве",
            "فستان أحمر على العشب", " ".join(["a very long caption that the context cuts"] * 12)]


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory):
    return offline.resolve("multilingual-e5-small", tmp_path_factory.mktemp("sfclip-cache"))


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return [Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
            for name in ("astronaut", "coffee", "chelsea", "rocket", "camera")]


def _student(e5_dir, embedding: str) -> tuple[SFCLIP, object]:
    """A 64 px student with random weights everywhere (LayerNorms and biases included), E5's tokenizer and
    prefix; the SF-CLIP one inherits E5's table through a fixed scale and a 384 -> 96 projection and carries
    a distillation head (which stays behind)."""
    tok = load_tokenizer(e5_dir, context_length=32, prefix="query: ")
    text = {"text.causal": True, "text.pool": "eos", "text.eos_id": tok.eos_id, "text.pad_id": tok.pad_id,
            "text.context_length": 32, "text.width": 96, "text.heads": 4, "text.layers": 2}
    if embedding == "inherited":
        from safetensors import safe_open

        with safe_open(str(e5_dir / "model.safetensors"), "pt") as f:
            table = f.get_tensor("embeddings.word_embeddings.weight")
        text.update({"text.embedding": "inherited", "text.vocab_size": table.shape[0],
                     "text.embed_width": table.shape[1], "text.embed_norm": "scale"})
    else:
        text["text.vocab_size"] = tok.vocab_size
    cfg = resolve_model_config("vit-demo-8", {"vision.image_size": 64, "vision.width": 96, "vision.heads": 4,
                                              "vision.layers": 2, "embed_dim": 64, **text})
    if embedding == "inherited":
        cfg.heads = [HeadConfig(name="dinov2", tower="vision", width=384)]
    torch.manual_seed(0)
    model = SFCLIP(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        if embedding == "inherited":
            model.text.inherit_embeddings(table)
    return model.eval(), tok


@pytest.mark.parametrize("embedding", ["own", "inherited"])
def test_open_clip_loads_the_export_and_encodes_the_same(e5_dir, photos, tmp_path, embedding):
    model, tok = _student(e5_dir, embedding)
    ckpt = tmp_path / "ckpt"
    save_student(ckpt, model, tok)
    write_manifest(ckpt)
    out = tmp_path / "open_clip"
    assert main(["export", str(ckpt), "--to", "open_clip", "--out", str(out)]) == 0

    oc, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    oc_tok = open_clip.get_tokenizer(f"local-dir:{out}")
    oc.eval()
    sf, sf_tok, sf_transform = sfclip.load(ckpt)

    # The same pixels: open_clip's preprocessing from the exported preprocess_cfg against sfclip's eval transform.
    x_oc = torch.stack([preprocess(im) for im in photos])
    x_sf = torch.stack([sf_transform(im) for im in photos])
    torch.testing.assert_close(x_oc, x_sf, atol=1e-6, rtol=0)

    # The same ids: E5's "query: " prefix moved into the exported tokenizer's template.
    ids_oc = oc_tok(CAPTIONS)
    enc = sf_tok(CAPTIONS)
    assert torch.equal(ids_oc, enc["input_ids"])
    assert int((ids_oc != tok.pad_id).sum(1).max()) == 32  # the long caption is truncated alike

    with torch.no_grad():
        img_oc, img_sf = oc.encode_image(x_sf), sf.encode_image(x_sf, normalize=False)
        txt_oc, txt_sf = oc.encode_text(ids_oc), sf.encode_text(**enc, normalize=False)
    assert float((img_oc - img_sf).abs().max()) <= 1e-4
    assert float((txt_oc - txt_sf).abs().max()) <= 1e-4
    assert float(img_sf.abs().mean()) > 1e-2 and float(txt_sf.std(0).mean()) > 1e-3  # not degenerate
    torch.testing.assert_close(oc.logit_scale.exp(), sf.logit_scale.exp())

    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["vocab_size"] == model.cfg.text.vocab_size
    assert not any("head" in k for k in oc.state_dict())  # the distillation head stayed behind
