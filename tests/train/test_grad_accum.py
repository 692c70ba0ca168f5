"""Gradient accumulation keeps the contrastive batch: two micro-batches of 4 give the loss and every gradient
of one batch of 8 (OpenCLIP's feature-cached accumulation), through the trainer's own step."""

import pytest
import torch

from sfclip.config import load_config
from sfclip.losses.contrastive import splice_rows
from sfclip.train.loop import Trainer

CAPTIONS = ["a photo of a red cat", "a blue dog", "a green car on grass", "a yellow tree", "two red cars",
            "a small blue house", "a big green tree on the left", "one yellow dog with a cat"]


def make_trainer(tmp_path, name, recipe_writer, shards, vision_dir, text_dir, **kw) -> Trainer:
    recipe = recipe_writer(tmp_path / f"{name}.yaml", shards, vision_dir, text_dir, tmp_path / name,
                           **{"train.steps": 10, "optim.grad_clip": 0.0, **kw})
    trainer = Trainer(load_config(recipe))
    trainer.total_steps, trainer.data_positions = 10, [0]
    trainer.scheduler = trainer._schedule()
    return trainer


def batch_of(trainer, rows: slice) -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=g)  # (B, 3, H, W)
    enc = trainer.tokenizer(CAPTIONS)
    return {"image": images[rows], "input_ids": enc["input_ids"][rows], "attention_mask": enc["attention_mask"][rows],
            "__key__": [str(i) for i in range(8)][rows], "stream_position": (0, 1)}


def one_step(trainer, micro_batches) -> tuple[dict, dict[str, torch.Tensor]]:
    """Run the trainer's step on these micro-batches; the gradients the optimizer would have applied."""
    grads = {}

    def record(optimizer):
        grads.update({n: p.grad.detach().clone() for n, p in trainer.student.named_parameters() if p.grad is not None})

    trainer.scaler.step = record
    out, _ = trainer._train_step(iter(micro_batches))
    return out, grads


@pytest.mark.parametrize("contrastive", ["clip", "siglip"])
def test_accumulated_micro_batches_give_the_big_batch_loss_and_gradients(
        tmp_path, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir, recipe_writer, contrastive):
    args = (recipe_writer, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir)
    common = {"objective.distill_fraction": 0.0, "objective.contrastive": contrastive}
    big = make_trainer(tmp_path, "big", *args, **common, **{"data.batch_size": 8})
    acc = make_trainer(tmp_path, "acc", *args, **common, **{"data.batch_size": 4, "train.grad_accum": 2})
    acc.student.load_state_dict(big.student.state_dict())
    with torch.no_grad():  # away from the initial temperature, so that its gradient is not special
        for s in (big.student, acc.student):
            s.logit_scale.fill_(2.0)

    out_big, g_big = one_step(big, [batch_of(big, slice(0, 8))])
    out_acc, g_acc = one_step(acc, [batch_of(acc, slice(0, 4)), batch_of(acc, slice(4, 8))])
    torch.testing.assert_close(out_acc["contrastive_loss"], out_big["contrastive_loss"])
    torch.testing.assert_close(out_acc["loss"], out_big["loss"])
    assert g_big and sorted(g_acc) == sorted(g_big)
    assert "logit_scale" in g_big
    for name, grad in g_big.items():
        torch.testing.assert_close(g_acc[name], grad, msg=lambda m, name=name: f"{name}: {m}")


def test_each_micro_batch_alone_would_not_give_them(tmp_path, pair_shards, tiny_vision_teacher_dir,
                                                    tiny_text_teacher_dir, recipe_writer, monkeypatch):
    # The reference above can fail: micro-batches scored against their own rows only (the old behaviour)
    # give a smaller contrastive batch, another loss and other gradients.
    args = (recipe_writer, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir)
    big = make_trainer(tmp_path, "big", *args, **{"objective.distill_fraction": 0.0, "data.batch_size": 8})
    acc = make_trainer(tmp_path, "acc", *args, **{"objective.distill_fraction": 0.0, "data.batch_size": 4,
                                                  "train.grad_accum": 2})
    acc.student.load_state_dict(big.student.state_dict())
    monkeypatch.setattr(acc, "_cached_features", lambda micro, autocast: [None] * len(micro))
    out_big, g_big = one_step(big, [batch_of(big, slice(0, 8))])
    out_acc, g_acc = one_step(acc, [batch_of(acc, slice(0, 4)), batch_of(acc, slice(4, 8))])
    assert not torch.allclose(out_acc["contrastive_loss"], out_big["contrastive_loss"])
    differ = [n for n, g in g_big.items() if not torch.allclose(g_acc[n], g, rtol=1e-3, atol=1e-6)]
    assert len(differ) > len(g_big) // 2


def test_distillation_terms_are_averaged_over_the_micro_batches(tmp_path, pair_shards, tiny_vision_teacher_dir,
                                                                tiny_text_teacher_dir, recipe_writer):
    # With distillation on, the step's gradient is the contrastive big-batch gradient plus the mean of the
    # micro-batches' distillation gradients: checked against the objective called by hand.
    args = (recipe_writer, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir)
    acc = make_trainer(tmp_path, "acc", *args, **{"objective.distill_fraction": 0.5, "data.batch_size": 4,
                                                  "train.grad_accum": 2, "objective.log_references": False})
    micro = [batch_of(acc, slice(0, 4)), batch_of(acc, slice(4, 8))]
    rng = acc.objective.rng_state()
    out, grads = one_step(acc, micro)
    assert {"dino_loss", "bert_loss", "contrastive_loss"} <= set(out)

    acc.objective.set_rng_state(rng)  # the same masks again
    obj = acc.objective
    feats = [obj.contrastive_features(b) for b in micro]
    image, text = torch.cat([f[0] for f in feats]), torch.cat([f[1] for f in feats])
    for i, b in enumerate(micro):
        o = obj(b, {"image": image, "text": text, "start": 4 * i, "micro_batches": 2})
        (o["loss"] / 2).backward()
    for name, p in acc.student.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, msg=lambda m, name=name: f"{name}: {m}")


def test_splice_rows_keeps_values_and_scales_the_gradient():
    cached = torch.randn(6, 3)
    rows = torch.randn(2, 3, requires_grad=True)
    out = splice_rows(cached, rows, 2, micro_batches=3)
    torch.testing.assert_close(out, torch.cat([cached[:2], rows.detach(), cached[4:]]))
    out.sum().backward()
    torch.testing.assert_close(rows.grad, torch.full((2, 3), 3.0))


def test_a_shared_view_cannot_accumulate(tmp_path, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                                         recipe_writer):
    from sfclip.config import ConfigError

    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs", **{"train.grad_accum": 2, "objective.image_view": "shared"})
    with pytest.raises(ConfigError, match="image_view=separate"):
        Trainer(load_config(recipe))
