"""Result records on disk, the text table, and the task registry."""

from __future__ import annotations

import json
import math

import pytest
from eval_fixtures import NAMES, ColourOracle, solid

from sfclip.eval import (
    TASKS,
    evaluate,
    format_table,
    image_transform,
    read_results,
    result_record,
    write_result,
    zeroshot,
)
from sfclip.eval.images import CLIP_MEAN, CLIP_STD


def test_record_is_clip_benchmark_shaped_and_round_trips(tmp_path):
    rec = result_record("imagenet1k", "vit-b-16", "zeroshot_classification", {"acc1": 0.5, "acc5": 0.75},
                        language="en", pretrained="run1.pt")
    assert set(rec) == {"dataset", "model", "task", "metrics", "language", "pretrained"}
    path = write_result(tmp_path, rec)
    # clip_benchmark eval's default name, {dataset}_{pretrained}_{model}_{language}_{task}.json: two checkpoints
    # of one architecture evaluated into one folder do not overwrite each other
    assert path.name == "imagenet1k_run1.pt_vit-b-16_en_zeroshot_classification.json"
    del rec["pretrained"]
    assert write_result(tmp_path / "plain", rec).name == "imagenet1k_vit-b-16_en_zeroshot_classification.json"
    rec["pretrained"] = "run1.pt"
    assert json.loads(path.read_text()) == rec
    explicit = write_result(tmp_path / "sub" / "x.json", rec)
    assert explicit == tmp_path / "sub" / "x.json"
    assert read_results(tmp_path) == [rec]


def test_table_lists_records_and_hides_per_class_columns():
    recs = [result_record("voc", "m", "zeroshot_segmentation", {"miou": 0.5, "iou/cat": 0.25}),
            result_record("coco", "m", "retrieval", {"i2t_r1": 0.123456, "t2i_r1": float("nan")})]
    table = format_table(recs)
    lines = table.splitlines()
    assert lines[0].split() == ["dataset", "task", "language", "model", "miou", "i2t_r1", "t2i_r1"]
    assert "0.1235" in lines[3] and "nan" in lines[3] and "0.5000" in lines[2]
    assert "iou/cat" in format_table(recs, per_class=True)
    assert math.isnan(recs[1]["metrics"]["t2i_r1"])


def test_registry_and_evaluate(tmp_path, tok):
    assert set(TASKS) == {"zeroshot_classification", "retrieval", "linear_probe", "zeroshot_segmentation",
                          "linear_segmentation"}
    with pytest.raises(ValueError, match="known"):
        evaluate("nope", None, tok)
    for name in NAMES[:3]:
        (tmp_path / name).mkdir()
        solid(name).save(tmp_path / name / "0.png")
    kw = dict(data=tmp_path, transform=image_transform(32, CLIP_MEAN, CLIP_STD), templates=["a {c} ."],
              progress=False)
    model = ColourOracle(tok, shift=1)
    assert evaluate("zeroshot_classification", model, tok, **kw) == zeroshot.run(model, tok, **kw)


def test_runners_refuse_a_model_on_another_device(tmp_path, tok):
    solid("red").save(tmp_path / "red.png")
    (tmp_path / "d.json").write_text(json.dumps({"images": [
        {"filename": "red.png", "split": "test", "sentences": [{"raw": "the red"}]}]}))
    with pytest.raises(ValueError, match="move the model"):
        evaluate("retrieval", ColourOracle(tok), tok, data=tmp_path / "d.json", device="cuda",
                 transform=image_transform(32, CLIP_MEAN, CLIP_STD), progress=False)


def test_evaluate_refuses_bad_arguments_before_any_work(tok):
    # model=None: a check that ran after the work started would fail on it instead
    with pytest.raises(ValueError, match="does not take 'language'.*only zeroshot_classification"):
        evaluate("linear_probe", None, tok, train_data="a", test_data="b", language="de")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate("retrieval", None, tok, data="a", batch_size=0)


def test_check_writable_finds_a_bad_output_and_creates_nothing(tmp_path):
    from sfclip.eval.results import check_writable

    check_writable(tmp_path / "new" / "deeper" / "r.json")
    check_writable(tmp_path / "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # checking created nothing
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="f.txt is a file"):
        check_writable(tmp_path / "f.txt" / "r.json")
    (tmp_path / "old.json").write_text("{}")
    check_writable(tmp_path / "old.json")
    assert (tmp_path / "old.json").read_text() == "{}"  # an existing result is not truncated by the check
