"""One optimizer step's bookkeeping: the fp16 grad scaler on a skipped step, the temperature clamp."""

import math

import pytest
import torch

from sfclip.config import load_config
from sfclip.train.loop import Trainer


@pytest.fixture
def trainer(tmp_path, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir, recipe_writer):
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs", **{"train.steps": 2, "train.ckpt_every": 100})
    return Trainer(load_config(recipe))


def test_a_non_finite_loss_under_fp16_skips_the_step_and_backs_off_the_scale(trainer, monkeypatch):
    # What train.precision=fp16 builds on a GPU; GradScaler runs on CPU too (autocast stays off here).
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert trainer.scaler.is_enabled()
    forward, calls = trainer.model.forward, []

    def nan_on_first_step(batch):
        out = forward(batch)
        calls.append(1)
        if len(calls) == 1:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer.model, "forward", nan_on_first_step)
    out = trainer.fit()  # used to raise "No inf checks were recorded prior to update"
    assert out["step"] == 2 and out["bad_steps"] == 1
    assert trainer.scaler.get_scale() == 2.0**9  # halved once, by the skipped step; the finite one stepped
    assert trainer.optimizer.state  # the second step did update the weights


def test_the_trainer_clamps_the_temperature_after_the_step(trainer):
    with torch.no_grad():
        trainer.student.logit_scale.fill_(math.log(100) + 1.0)  # e.g. set by hand, or a large lr
    trainer.cfg.train.steps = 1
    trainer.fit()
    scale = trainer.student.logit_scale.detach()
    torch.testing.assert_close(scale, torch.full_like(scale, math.log(100)))
    # the loss did not clamp: the temperature had a gradient above log(100), so Adam has moved it
    assert trainer.optimizer.state[trainer.student.logit_scale]["exp_avg"].abs().max() > 0
