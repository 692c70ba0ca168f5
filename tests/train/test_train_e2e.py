"""A tiny end-to-end run through the real CLI entry: loss falls, metrics and checkpoints are written."""

import json

import pytest
import torch

import sfclip
from sfclip.cli import main


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_cli_train_end_to_end(tmp_path, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir, recipe_writer):
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs")
    assert main(["train", str(recipe), "train.steps=80"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    rows = [r for r in read_metrics(run_dir) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 81))
    for key in ("contrastive_loss", "dino_loss", "bert_loss", "lr", "grad_norm", "samples_per_s", "logit_scale"):
        assert key in rows[-1], key
    first = sum(r["contrastive_loss"] for r in rows[:10]) / 10
    last = sum(r["contrastive_loss"] for r in rows[-10:]) / 10
    assert last < first - 0.4, (first, last)  # chance is ln(8) = 2.08 for a batch of 8
    assert rows[-1]["dino_loss"] < rows[0]["dino_loss"] and rows[-1]["bert_loss"] < rows[0]["bert_loss"]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert ckpts == ["step_00000072", "step_00000080"]  # keep_last=2
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000080"
    saved = (run_dir / "checkpoints" / "step_00000080" / "config.yaml").read_text()
    assert "distill_fraction: 0.5" in saved and "model_config" in saved
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train.log").is_file()

    model, tokenizer, transform = sfclip.load(run_dir)
    from PIL import Image

    img = transform(Image.new("RGB", (50, 40), (220, 30, 30))).unsqueeze(0)
    texts = tokenizer(["a photo of a red cat", "a photo of a blue cat"])
    with torch.no_grad():
        sims = model.encode_image(img) @ model.encode_text(**texts).T
    assert sims.shape == (1, 2) and torch.isfinite(sims).all()
    names = {k for k in model.state_dict()}
    assert not any("teachers" in k for k in names)


def test_bad_recipe_fails_fast_with_the_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 1e-3\n  betaz: [0.9, 0.98]\ntrain:\n  steps: 3\n")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "betaz" in err and len(err.strip().splitlines()) == 1
    assert main(["train", str(recipe).replace("r.yaml", "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    recipe.write_text("train:\n  steps: three\n")
    assert main(["train", str(recipe)]) == 2
    assert "train.steps" in capsys.readouterr().err


def test_wrong_data_path_fails_at_once(tmp_path, tiny_vision_teacher_dir, tiny_text_teacher_dir, recipe_writer):
    recipe = recipe_writer(tmp_path / "r.yaml", str(tmp_path / "nope" / "{00000..00003}.tar"), tiny_vision_teacher_dir,
                          tiny_text_teacher_dir, tmp_path / "runs")
    with pytest.raises((FileNotFoundError, ValueError), match="nope"):
        from sfclip.config import load_config
        from sfclip.train.loop import train

        train(load_config(recipe))
