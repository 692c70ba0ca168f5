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


def test_a_loader_that_fails_after_the_stop_request_still_checkpoints_the_last_step(trainer, monkeypatch):
    # A data worker killed by the same SIGTERM that asked the run to stop (it may land before the worker
    # starts ignoring it): the trainer saves the last finished step instead of crashing.
    trainer.cfg.train.grad_accum = 2
    real = trainer._batches

    def batches():
        gen = real()
        for _ in range(3):  # step 1 (two micro-batches), then the first micro-batch of step 2
            yield next(gen)
        trainer.stop_requested = True
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated. ")

    monkeypatch.setattr(trainer, "_batches", batches)
    out = trainer.fit()
    assert out["step"] == 1
    state = torch.load(trainer.last_checkpoint / "state.pt", weights_only=True)
    # the data position of step 1's end, not of the half-read step 2
    assert state["step"] == 1 and state["batch_in_epoch"] == 2


def test_the_loader_config_is_derived_and_the_run_config_left_as_validated(trainer):
    sizes = sorted({t.image_size for t in trainer.objective.vision_teachers.values()})
    assert sizes and trainer.data_cfg.teacher_sizes == sizes  # each live vision teacher's view is rendered
    assert trainer.cfg.data.teacher_sizes == []  # the recipe's value, not the trainer's
    trainer._build_loader()
    batch = next(iter(trainer.loader))
    assert sorted(batch["teacher_image"]) == sizes


def fake_wandb(monkeypatch) -> list[dict]:
    """A `wandb` module that records each `init` call; a new run's id is "run-<n>"."""
    import sys
    import types

    inits: list[dict] = []

    def init(**kw):
        inits.append(kw)
        return types.SimpleNamespace(id=kw.get("id") or f"run-{len(inits)}", log=lambda *a, **k: None,
                                     finish=lambda: None)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    return inits


def test_wandb_gets_the_resolved_config(tmp_path, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                                        recipe_writer, monkeypatch):
    inits = fake_wandb(monkeypatch)
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs", **{"train.steps": 2, "log.wandb": True})
    trainer = Trainer(load_config(recipe))
    assert inits == []  # the run starts once the trainer knows whether it resumes
    trainer._setup()
    assert len(inits) == 1 and inits[0]["id"] is None and inits[0]["resume"] == "allow"
    assert inits[0]["config"]["train"]["steps"] == 2 and inits[0]["config"]["student"]["model"] == "test-tiny"


def test_a_resumed_run_continues_its_wandb_run(tmp_path, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                                               recipe_writer, monkeypatch):
    inits = fake_wandb(monkeypatch)
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs", **{"train.steps": 4, "train.ckpt_every": 100, "log.wandb": True,
                                                 "train.resume": "latest"})
    first = Trainer(load_config(recipe, ["train.max_steps_this_run=2"])).fit()
    state = torch.load(f"{first['checkpoint']}/state.pt", weights_only=True)
    assert first["step"] == 2 and state["wandb_run_id"] == "run-1"
    second = Trainer(load_config(recipe)).fit()
    assert second["step"] == 4
    assert [kw["id"] for kw in inits] == [None, "run-1"] and inits[1]["resume"] == "allow"
    # a fresh run (no checkpoint to resume) starts a new W&B run
    Trainer(load_config(recipe, [f"output_dir={tmp_path / 'other'}", "train.steps=1"])).fit()
    assert inits[2]["id"] is None
