"""The command line end to end: a tiny trained checkpoint goes through every evaluation task."""

import json

import pytest

from sfclip.cli import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_vision_teacher_dir, tiny_text_teacher_dir, shard_writer, recipe_writer):
    root = tmp_path_factory.mktemp("cli")
    shards = shard_writer(root / "shards")
    recipe = recipe_writer(root / "r.yaml", shards, tiny_vision_teacher_dir, tiny_text_teacher_dir, root / "runs",
                          **{"train.steps": 10, "log.progress": False})
    assert main(["train", str(recipe)]) == 0
    return root / "runs" / "tiny"


@pytest.fixture(scope="module")
def eval_sets(tmp_path_factory):
    from sfclip.demo.scenes import SceneConfig, write_eval_sets

    return write_eval_sets(tmp_path_factory.mktemp("evalsets"), 12, seed=1, cfg=SceneConfig(image_size=64))


TASKS = {
    "zeroshot_classification": (["--data", "{classification}", "--classnames", "{names}", "--templates", "{names}",
                                 "--language", "de"], {"acc1", "acc5", "mean_per_class_recall"}),
    "retrieval": (["--data", "{retrieval}"], {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}),
    "linear_probe": (["--train-data", "{classification}", "--test-data", "{classification}", "--classnames", "{names}",
                      "--arg", "weight_decays=[0.001]", "--arg", "val_fraction=0.25"],
                     {"acc1", "mean_per_class_recall"}),
    "zeroshot_segmentation": (["--data", "{segmentation}", "--classnames", "{segclasses}", "--arg", "resize_short=32",
                               "--readout", "clearclip"], {"miou", "pixel_acc"}),
    "linear_segmentation": (["--data", "{segmentation}", "--classnames", "{segclasses}", "--arg", "train_split=",
                             "--arg", "test_split=", "--arg", "epochs=2"], {"miou", "pixel_acc"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_eval_cli_every_task(task, trained_run, eval_sets, tmp_path, capsys):
    paths = {"classification": eval_sets["classification"], "retrieval": eval_sets["retrieval"],
             "segmentation": eval_sets["segmentation"],
             "names": eval_sets["classification"].parent / "classnames.json",
             "segclasses": eval_sets["segmentation"] / "classes.json"}
    args, keys = TASKS[task]
    args = [a.format(**paths) for a in args]
    out = tmp_path / "result.json"
    assert main(["eval", str(trained_run), "--task", task, *args, "--output", str(out), "--batch-size", "8",
                 "--pictures", str(tmp_path / "pics")]) == 0
    record = json.loads(out.read_text())
    # CLIP_benchmark's task name (sfclip's retrieval is its zeroshot_retrieval) and the fields its build reads
    assert record["task"] == {"retrieval": "zeroshot_retrieval"}.get(task, task)
    assert set(record) >= {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert record["model"] == "test-tiny" and record["pretrained"] == str(trained_run)
    assert keys <= set(record["metrics"]), (keys, record["metrics"])
    for k in keys:
        assert 0.0 <= record["metrics"][k] <= 1.0
    assert task.split("_")[0] in capsys.readouterr().out or "acc1" in capsys.readouterr().out
