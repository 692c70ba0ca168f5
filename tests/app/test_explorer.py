"""The page's questions answered without the web layer: zero-shot labels, heat maps, search, bad inputs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from sfclip.app import Explorer
from sfclip.app.explorer import parse_classes, parse_templates
from sfclip.app.heatmap import VIRIDIS, colorize, colour_bar, overlay
from sfclip.eval.prompts import fill


def png_image(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def first_image(collection) -> Image.Image:
    return Image.open(collection["folder"] / collection["items"][0][0]).convert("RGB")


def test_zeroshot_is_clip_softmax_over_template_means(explorer, loaded, collection):
    model, tokenizer, transform = loaded
    image = first_image(collection)
    out = explorer.zeroshot(image, "red, green\nblue\n\nred", "a photo of a {c}.\na {c} thing")
    assert sorted(lab["label"] for lab in out["labels"]) == ["blue", "green", "red"]  # blanks, repeats dropped
    assert [lab["prob"] for lab in out["labels"]] == sorted((lab["prob"] for lab in out["labels"]), reverse=True)
    assert sum(lab["prob"] for lab in out["labels"]) == pytest.approx(1.0, abs=1e-3)
    # The reference: per class, the renormalized mean of its prompts' embeddings; softmax of scaled cosines.
    with torch.inference_mode():
        img = model.encode_image(transform(image)[None])[0]
        weights = []
        for c in ("red", "green", "blue"):
            tok = tokenizer([fill(t, c) for t in ("a photo of a {c}.", "a {c} thing")])
            weights.append(torch.nn.functional.normalize(model.encode_text(**tok).mean(0), dim=0))
        probs = torch.softmax(model.logit_scale.exp() * img @ torch.stack(weights).T, dim=0)
    got = {lab["label"]: lab["prob"] for lab in out["labels"]}
    assert [got[c] for c in ("red", "green", "blue")] == pytest.approx(probs.tolist(), abs=1e-3)


def test_heatmap_is_patch_text_cosine(explorer, loaded, collection):
    model, tokenizer, transform = loaded
    image = first_image(collection)
    out = explorer.heatmap(image, "  a red car ")
    with torch.inference_mode():
        patches = model.encode_patches(transform(image)[None])[0]  # (h, w, E)
        tok = tokenizer(["a red car"])
        sim = (patches @ model.encode_text(**tok)[0]).numpy()  # (h, w)
    grid = model.cfg.vision.image_size // model.cfg.vision.patch_size
    assert out["grid"] == [grid, grid] and out["prompt"] == "a red car"
    assert (out["min"], out["max"]) == (pytest.approx(float(sim.min()), abs=1e-4), pytest.approx(float(sim.max()),
                                                                                                   abs=1e-4))
    assert png_image(out["overlay"]).size == (320, 320)
    bar = np.asarray(png_image(out["scale"]).convert("RGB"))
    assert tuple(bar[0, 0]) == (0x44, 0x01, 0x54) and tuple(bar[0, -1]) == (0xfd, 0xe7, 0x25)
    # a training-free readout: the same cosine, from the readout's patch embeddings
    out = explorer.heatmap(image, "a red car", readout="clearclip")
    with torch.inference_mode():
        sim = (model.encode_patches(transform(image)[None], readout="clearclip")[0] @ model.encode_text(**tok)[0])
    assert out["readout"] == "clearclip" and out["max"] == pytest.approx(float(sim.max()), abs=1e-4)


def test_overlay_puts_the_top_colour_where_the_map_peaks():
    sim = np.zeros((4, 4), np.float32)
    sim[0, 3] = 1.0  # top-right patch
    picture, lo, hi = overlay(Image.new("RGB", (64, 48), (128, 128, 128)), sim, size=64, alpha=1.0)
    arr = np.asarray(picture)
    assert (lo, hi) == (0.0, 1.0)
    assert tuple(arr[4, 58]) == tuple(colorize(np.float32(1.0)))  # yellow in the peak's corner
    assert tuple(arr[58, 4]) == tuple(colorize(np.float32(0.0)))  # dark purple far from it
    assert colour_bar(11, 2).getpixel((5, 0)) == tuple(int(VIRIDIS[5][i:i + 2], 16) for i in (1, 3, 5))


def test_search_by_text_and_by_row(explorer):
    out = explorer.search_text("a green tree", k=5)
    assert len(out["results"]) == 5 and "numpy" in out["backend"]
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    row = out["results"][2]["row"]
    same = explorer.search_image(explorer.row_image(row), k=3)["results"]
    assert same[0]["row"] == row or same[0]["score"] == pytest.approx(same[1]["score"], abs=1e-3)
    assert same[0]["score"] > 0.999
    assert explorer.thumbnail(row)[:3] == b"\xff\xd8\xff"  # a JPEG


@pytest.mark.parametrize("call, message", [
    (lambda e, img: e.search_text("   "), "the query is empty"),
    (lambda e, img: e.search_text("x", k=0), "k must be between"),
    (lambda e, img: e.zeroshot(img, " ,\n "), "at least one class name"),
    (lambda e, img: e.zeroshot(img, "cat", "a photo"), "contain '{c}'"),
    (lambda e, img: e.heatmap(img, ""), "the prompt is empty"),
    (lambda e, img: e.heatmap(img, "a cat", readout="sclip"), "readout must be one of plain, maskclip, clearclip"),
    (lambda e, img: e.image(b"%PDF-1.4 not a picture", None), "is not an image"),
    (lambda e, img: e.image(None, None), "choose an image first"),
])
def test_bad_inputs_raise_a_message(call, message, explorer, collection):
    with pytest.raises(ValueError, match=message):
        call(explorer, first_image(collection))


def test_a_huge_image_is_refused_before_decoding(explorer):
    buf = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(buf, format="PNG")  # 60 megapixels in a few kB
    with pytest.raises(ValueError, match="10000 x 6000 pixels"):
        explorer.image(buf.getvalue(), None)


def test_a_missing_index_is_a_message_not_a_failure(loaded, tmp_path):
    model, tokenizer, transform = loaded
    explorer = Explorer(model, tokenizer, transform, tmp_path / "nothing")
    assert "index unavailable" in explorer.info()["index_error"] and explorer.info()["index"] is None
    with pytest.raises(ValueError, match="sfclip embed"):
        explorer.search_text("a cat")
    assert explorer.zeroshot(Image.new("RGB", (40, 40)), "cat, dog")["labels"]  # the rest still works
    assert "--index" in Explorer(model, tokenizer, transform, None).info()["index_error"]


def test_parsers():
    assert parse_classes("cat, dog\n\n cat \nred car") == ["cat", "dog", "red car"]
    assert parse_templates("") == ["a photo of a {c}."]
    assert parse_templates("un {c}\nein Foto von {}") == ["un {c}", "ein Foto von {c}"]
