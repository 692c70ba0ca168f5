"""Retrieval on every data layout: the oracle scores 1.0, wrong models less, chunking changes nothing."""

from __future__ import annotations

import json

import pytest
from eval_fixtures import NAMES, ColourOracle, png_bytes, solid, write_json, write_tar

from sfclip.eval import image_transform, retrieval
from sfclip.eval.images import CLIP_MEAN, CLIP_STD

TRANSFORM = image_transform(32, CLIP_MEAN, CLIP_STD)
INDEX_KEYS = {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
KEYS = INDEX_KEYS | {f"{k}_text" for k in INDEX_KEYS} | {f"oracle_{k}" for k in INDEX_KEYS} | {"mean_recall"}
GERMAN = {"red": "rot", "green": "gruen", "blue": "blau", "yellow": "gelb", "cyan": "tuerkis",
          "magenta": "lila", "black": "schwarz"}


def captions(name: str, n: int) -> list[str]:
    return [f"a photo of the {name} .", f"one {name} image", f"the {name}"][:n]


@pytest.fixture
def karpathy(tmp_path):
    (tmp_path / "val2014").mkdir()
    images = []
    for i, name in enumerate(NAMES):
        solid(name).save(tmp_path / "val2014" / f"{name}.png")
        images.append({"filepath": "val2014", "filename": f"{name}.png", "split": "test",
                       "sentences": [{"raw": c} for c in captions(name, 1 + i % 3)]})
    # a train-split duplicate of "red": if the split filter failed it would tie with the test image
    solid("red").save(tmp_path / "val2014" / "red2.png")
    images.append({"filepath": "val2014", "filename": "red2.png", "split": "train",
                   "sentences": [{"raw": "a red photo"}]})
    return write_json(tmp_path / "dataset_coco.json", {"images": images})


def test_oracle_scores_one_on_karpathy(karpathy, tok):
    out = retrieval.run(ColourOracle(tok), tok, karpathy, transform=TRANSFORM, progress=False)
    assert set(out) == KEYS
    assert all(v == 1.0 for v in out.values()), out


def test_wrong_models_score_less(karpathy, tok):
    wrong = retrieval.run(ColourOracle(tok, shift=1), tok, karpathy, transform=TRANSFORM, progress=False)
    assert wrong["i2t_r1"] == 0.0 and wrong["t2i_r1"] == 0.0
    useless = retrieval.run(ColourOracle(tok, constant=True), tok, karpathy, transform=TRANSFORM,
                            progress=False)
    assert useless["i2t_r1"] == 0.0 and useless["t2i_r5"] == 0.0  # ties count against the model
    assert useless["t2i_r10"] == 1.0  # 7 images: everything is within the top 10


def test_split_filter(karpathy, tok):
    with_train = retrieval.run(ColourOracle(tok), tok, karpathy, transform=TRANSFORM, split=None,
                               progress=False)
    assert with_train["t2i_r1"] < 1.0  # the duplicate red image ties with the test one


def test_chunking_changes_nothing(karpathy, tok):
    model = ColourOracle(tok, shift=2)
    full = retrieval.run(model, tok, karpathy, transform=TRANSFORM, chunk_size=10_000, progress=False)
    for chunk in (1, 3):
        chunked = retrieval.run(model, tok, karpathy, transform=TRANSFORM, chunk_size=chunk, progress=False)
        assert chunked == full


def test_jsonl_multilingual_and_crossmodal3600(tmp_path, tok):
    lines, xm = [], []
    for name in NAMES:
        solid(name).save(tmp_path / f"{name}.png")
        solid(name).save(tmp_path / f"{name}.jpg", format="JPEG", quality=95)
        lines.append(json.dumps({"image": f"{name}.png", "captions": {
            "en": captions(name, 2), "de": [f"ein foto von {GERMAN[name]}", f"das {GERMAN[name]} bild"]}}))
        xm.append(json.dumps({"image/key": name, "en": {"caption": captions(name, 1)},
                              "de": {"caption": [f"ein {GERMAN[name]} bild"]}}))
    (tmp_path / "xtd.jsonl").write_text("\n".join(lines))
    (tmp_path / "captions.jsonl").write_text("\n".join(xm))
    model = ColourOracle(tok)
    for lang in ("en", "de"):
        for path in ("xtd.jsonl", "captions.jsonl"):
            out = retrieval.run(model, tok, tmp_path / path, transform=TRANSFORM, language=lang,
                                progress=False)
            assert all(v == 1.0 for v in out.values()), (lang, path, out)
    with pytest.raises(ValueError, match="language"):
        retrieval.run(model, tok, tmp_path / "xtd.jsonl", transform=TRANSFORM, progress=False)


def test_webdataset_txt_and_json(tmp_path, tok):
    samples = []
    for i, name in enumerate(NAMES):
        text = {"txt": "\n".join(captions(name, 3))} if i % 2 else {"json": json.dumps(captions(name, 2))}
        samples.append({"__key__": f"{i:04d}", "png": png_bytes(solid(name)), **text})
    write_tar(tmp_path / "000.tar", samples)
    out = retrieval.run(ColourOracle(tok), tok, tmp_path / "000.tar", transform=TRANSFORM, progress=False)
    assert all(v == 1.0 for v in out.values()), out


def test_pictures(karpathy, tok, tmp_path):
    pytest.importorskip("matplotlib")
    retrieval.run(ColourOracle(tok), tok, karpathy, transform=TRANSFORM, progress=False,
                  pictures_dir=tmp_path / "pics", num_pictures=2)
    pics = sorted((tmp_path / "pics").glob("*.png"))
    assert [p.name for p in pics] == ["retrieval_00.png", "retrieval_01.png"]
