"""CLIP_benchmark's wds/ layout written from sfclip's eval sets, read the way CLIP_benchmark 1.6.2's
`build_wds_dataset` reads it (webdataset + PIL `.convert("RGB")`, `str.splitlines`, `format(c=...)`), and the
`sfclip eval` JSON in the shape `clip_benchmark build` aggregates. The run against the real clip_benchmark is
tests/interop/test_clip_benchmark.py."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds
from eval_fixtures import NAMES, ColourOracle, png_bytes, solid, write_json
from PIL import Image

from sfclip.cli import main
from sfclip.eval import image_transform, retrieval, zeroshot
from sfclip.eval.clip_benchmark_wds import dataset_name, export_classification, export_retrieval, read_wds
from sfclip.eval.images import CLIP_MEAN, CLIP_STD, open_image
from sfclip.eval.results import BUILD_FIELDS, clip_benchmark_record, write_result


def _rgba_with_transparent_corner() -> bytes:
    img = solid("blue").convert("RGBA")
    img.putpixel((0, 0), (10, 20, 30, 0))  # sfclip shows it on white, PIL's convert("RGB") keeps (10, 20, 30)
    return png_bytes(img)


def _classification_csv(root):
    (root / "images").mkdir(parents=True)
    rows = []
    for i, name in enumerate(NAMES[:4]):
        (root / "images" / f"{i}.png").write_bytes(png_bytes(solid(name)))
        rows.append((f"images/{i}.png", i))
    (root / "images" / "4.png").write_bytes(_rgba_with_transparent_corner())
    rows.append(("images/4.png", 2))
    (root / "images" / "5.jpg").write_bytes(png_bytes(solid("yellow"), "JPEG"))
    rows.append(("images/5.jpg", 3))
    (root / "images" / "6.bmp").write_bytes(png_bytes(solid("red"), "BMP"))  # a format CLIP_benchmark skips
    rows.append(("images/6.bmp", 0))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filepath", "label"), *rows])
    names = write_json(root / "names.json", {"classnames": {"en": NAMES[:4], "de": ["rot", "gruen", "blau", "gelb"]},
                                             "templates": {"en": ["a photo of {}.", "{c} ."], "de": ["ein {c}"]}})
    return root / "labels.csv", names, rows


def _read_like_clip_benchmark(folder, label_key):
    """(pixels, label) per sample as CLIP_benchmark 1.6.2's build_wds_dataset yields them (transform=None)."""
    n = int((folder / "test" / "nshards.txt").read_text())
    pattern = str(folder / "test" / f"{{0..{n - 1}}}.tar")
    ds = (wds.WebDataset(pattern, nodesplitter=lambda src: src, shardshuffle=False)
          .decode(wds.autodecode.ImageHandler("pil", extensions=["webp", "png", "jpg", "jpeg"]))
          .to_tuple(["webp", "png", "jpg", "jpeg"], label_key))
    return [(np.asarray(img), label) for img, label in ds]


def test_classification_set_is_what_sfclip_reads(tmp_path):
    labels, names, rows = _classification_csv(tmp_path / "src")
    out = export_classification(tmp_path / "cb" / "wds_colours", labels, classnames=names, templates=names,
                                language="en")
    assert (out / "classnames.txt").read_text() == "red\ngreen\nblue\nyellow\n"
    templates = [line.strip() for line in (out / "zeroshot_classification_templates.txt").read_text().splitlines()]
    assert templates == ["a photo of {c}.", "{c} ."]  # sfclip's "{}" as CLIP_benchmark's str.format field
    assert [t.format(c="red") for t in templates] == ["a photo of red.", "red ."]
    assert not (out / "dataset_type.txt").exists()
    samples = _read_like_clip_benchmark(out, "cls")
    assert [label for _, label in samples] == [label for _, label in rows]
    for (pixels, _), (path, _) in zip(samples, rows):
        assert np.array_equal(pixels, np.asarray(open_image(tmp_path / "src" / path))), path
    # plain RGB PNG and JPEG copied byte for byte; the RGBA PNG and the BMP re-encoded from sfclip's pixels
    with tarfile.open(out / "test" / "0.tar") as tar:
        assert {"s0000000.png", "s0000000.cls", "s0000006.png"} <= set(tar.getnames())
        assert tar.extractfile("s0000000.png").read() == (tmp_path / "src" / "images" / "0.png").read_bytes()
        assert tar.extractfile("s0000005.jpg").read() == (tmp_path / "src" / "images" / "5.jpg").read_bytes()
        rgba = Image.open(io.BytesIO(tar.extractfile("s0000004.png").read()))
    assert rgba.mode == "RGB" and rgba.getpixel((0, 0)) == (255, 255, 255)  # on white, as sfclip decodes it
    assert dataset_name(out) == "wds/colours"


def test_sfclip_scores_the_wds_folder_as_the_source_set(tmp_path, tok):
    labels, names, _ = _classification_csv(tmp_path / "src")
    out = export_classification(tmp_path / "wds_colours", labels, classnames=names, templates=names, language="en")
    ws = read_wds(out)
    assert ws.task == "zeroshot_classification" and ws.name == "wds/colours" and len(ws.shards) == 1
    kw = dict(transform=image_transform(32, CLIP_MEAN, CLIP_STD), progress=False)
    for shift in (0, 1):
        model = ColourOracle(tok, shift=shift)
        native = zeroshot.run(model, tok, labels, classnames=names, templates=names, language="en", **kw)
        wds_run = zeroshot.run(model, tok, ws.shards, classnames=ws.classnames, templates=ws.templates, **kw)
        assert wds_run == native
    assert native["acc1"] == 0.0  # the wrong model: the comparison above could have failed


def test_retrieval_set_keeps_every_caption(tmp_path, tok):
    (tmp_path / "images").mkdir()
    images = []
    for i, name in enumerate(NAMES[:3]):
        (tmp_path / "images" / f"{i}.png").write_bytes(png_bytes(solid(name)))
        caps = [f"a photo of {name}", f"the {name} one"] if i != 1 else [f"{name}"]
        images.append({"filepath": "images", "filename": f"{i}.png", "split": "test",
                       "sentences": [{"raw": c} for c in caps]})
    images.append({"filepath": "images", "filename": "0.png", "split": "train", "sentences": [{"raw": "x"}]})
    captions = write_json(tmp_path / "captions.json", {"images": images})
    out = export_retrieval(tmp_path / "wds_caps", captions)
    assert (out / "dataset_type.txt").read_text().strip() == "retrieval"
    samples = _read_like_clip_benchmark(out, "txt")
    assert [txt.splitlines() for _, txt in samples] == [["a photo of red", "the red one"], ["green"],
                                                        ["a photo of blue", "the blue one"]]
    ws = read_wds(out)
    assert ws.task == "retrieval" and ws.classnames is None
    kw = dict(transform=image_transform(32, CLIP_MEAN, CLIP_STD), progress=False)
    model = ColourOracle(tok, shift=1)
    assert retrieval.run(model, tok, ws.shards, **kw) == retrieval.run(model, tok, captions, **kw)
    with pytest.raises(ValueError, match="line break"):
        export_retrieval(tmp_path / "bad", retrieval.retrieval_dataset(write_json(tmp_path / "b.json", {"images": [
            {"filename": "images/0.png", "split": "test", "sentences": [{"raw": "two\nlines"}]}]})))


def test_templates_with_other_braces_are_refused(tmp_path):
    labels, _, _ = _classification_csv(tmp_path / "src")
    with pytest.raises(ValueError, match="braces"):
        export_classification(tmp_path / "wds_x", labels, classnames=NAMES[:4], templates=["{c} {x}"])


def test_record_has_what_clip_benchmark_build_reads(tmp_path):
    rec = clip_benchmark_record("wds/scenes_retrieval", "test-tiny", "runs/tiny", "retrieval",
                                {"i2t_r1": 0.5, "i2t_r5": 1.0, "t2i_r1": 0.25, "t2i_r5": 0.75, "mean_recall": 0.625})
    for key, kind in BUILD_FIELDS.items():
        assert isinstance(rec[key], kind), key
    assert rec["task"] == "zeroshot_retrieval" and rec["pretrained"] == "runs/tiny" and rec["model"] == "test-tiny"
    m = rec["metrics"]
    assert m["text_retrieval_recall@5"] == m["i2t_r5"] == 1.0  # image queries finding captions
    assert m["image_retrieval_recall@1"] == m["t2i_r1"] == 0.25  # caption queries finding images
    assert m["mean_recall"] == 0.625 and "image_retrieval_recall@10" not in m
    cls = clip_benchmark_record("wds/x", "m", "p", "zeroshot_classification", {"acc1": 1, "mean_per_class_recall": 1})
    assert cls["task"] == "zeroshot_classification" and cls["metrics"] == {"acc1": 1.0, "mean_per_class_recall": 1.0}
    # clip_benchmark eval's own default file name: {dataset}_{pretrained}_{model}_{language}_{task}.json
    assert write_result(tmp_path, rec).name == "wds-scenes_retrieval_runs-tiny_test-tiny_en_zeroshot_retrieval.json"


@pytest.mark.slow
def test_sfclip_eval_on_a_wds_folder(tmp_path, tiny_text_teacher_dir, capsys):
    """`sfclip eval --data wds_<name>` through the CLI: the folder's own class names and templates, the
    dataset named wds/<name>, and the CLIP_benchmark record; a retrieval folder under the wrong task is refused."""
    import torch

    from sfclip.checkpoint import save_student
    from sfclip.models import create_model
    from sfclip.tokenizer import load_tokenizer

    labels, names, _ = _classification_csv(tmp_path / "src")
    out = export_classification(tmp_path / "cb" / "wds_colours", labels, classnames=names, templates=names,
                                language="en")
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    save_student(ckpt, create_model("test-tiny"), load_tokenizer(tiny_text_teacher_dir, context_length=16))
    result = tmp_path / "res"
    assert main(["eval", str(ckpt), "--task", "zeroshot_classification", "--data", str(out), "--output",
                 str(result)]) == 0
    (path,) = result.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["dataset"] == "wds/colours" and rec["model"] == "test-tiny" and rec["pretrained"] == str(ckpt)
    assert set(rec["metrics"]) == {"acc1", "mean_per_class_recall"}  # 4 classes: no acc5
    ret = export_retrieval(tmp_path / "cb" / "wds_caps", write_json(tmp_path / "src" / "c.json", {"images": [
        {"filename": "images/0.png", "split": "test", "sentences": [{"raw": "red"}]}]}))
    assert main(["eval", str(ckpt), "--task", "zeroshot_classification", "--data", str(ret)]) == 2
    assert "is a CLIP_benchmark retrieval set; evaluate it with --task retrieval" in capsys.readouterr().err
