"""The objective: selective distillation, shared view, cached targets, gradients, and what gets saved."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sfclip.build import StudentConfig, build_objective
from sfclip.masking import ImageMaskConfig
from sfclip.objective import ObjectiveConfig, align_patch_grid
from sfclip.teachers import TeacherConfig

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def make(vision_dir, text_dir, p=0.25, **kw):
    teachers = [TeacherConfig(name="dino", kind="vision", source=str(vision_dir)),
                TeacherConfig(name="bert", kind="text", source=str(text_dir))]
    ocfg = ObjectiveConfig(distill_fraction=p, teachers=teachers, **kw)
    obj, tok = build_objective(ocfg, StudentConfig(model="test-tiny"), MEAN, STD)
    return obj, tok


def batch_for(tok, B=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    words = "a photo of the red green blue cat dog car tree house on grass".split()
    caps = [" ".join(words[j] for j in torch.randint(len(words), (6,), generator=g)) for _ in range(B)]
    enc = tok(caps)
    return {"image": torch.randn(B, 3, 32, 32, generator=g), **enc}


class Spy:
    """Records the batch sizes a module's forward is called with."""

    def __init__(self, module: nn.Module):
        self.sizes = []
        module.register_forward_pre_hook(lambda m, args: self.sizes.append(args[0].shape[0]))


@pytest.fixture
def obj_tok(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    return make(tiny_vision_teacher_dir, tiny_text_teacher_dir)


def test_student_inherits_text_teacher(obj_tok):
    obj, tok = obj_tok
    table = obj.teachers["bert"].input_embeddings()
    assert torch.equal(obj.student.text.token_embedding.weight, table)
    assert tok.hf is obj.teachers["bert"].tokenizer
    assert obj.student.cfg.text.embedding == "inherited"
    assert obj.teachers["dino"].image_size == 16  # rendered so its 4x4 grid meets the student's


def test_selective_runs_teachers_on_the_subset_only(obj_tok):
    obj, tok = obj_tok
    dino, bert = Spy(obj.teachers["dino"]), Spy(obj.teachers["bert"])
    out = obj(batch_for(tok, B=8))
    assert dino.sizes == [2] and bert.sizes == [2]  # p = 0.25 of 8
    assert set(out) >= {"loss", "contrastive_loss", "dino_loss", "bert_loss"}
    total = out["contrastive_loss"] + out["dino_loss"] + out["bert_loss"]
    torch.testing.assert_close(out["loss"], total)


def test_p_zero_is_plain_clip(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    obj, tok = make(tiny_vision_teacher_dir, tiny_text_teacher_dir, p=0.0)
    dino, bert = Spy(obj.teachers["dino"]), Spy(obj.teachers["bert"])
    visual = Spy(obj.student.visual)
    out = obj(batch_for(tok))
    assert dino.sizes == [] and bert.sizes == [] and visual.sizes == [8]
    assert set(k for k in out if k.endswith("_loss")) == {"contrastive_loss"}
    torch.testing.assert_close(out["loss"], out["contrastive_loss"])


def test_shared_view_runs_one_image_pass(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    obj, tok = make(tiny_vision_teacher_dir, tiny_text_teacher_dir, p=0.5, image_view="shared",
                    image_mask=ImageMaskConfig(kind="random", ratio=0.5, mode="drop"))
    visual, dino = Spy(obj.student.visual), Spy(obj.teachers["dino"])
    out = obj(batch_for(tok))
    assert visual.sizes == [8] and dino.sizes == [4]
    assert torch.isfinite(out["loss"])


def test_gradients_reach_every_trainable_parameter_and_no_frozen_one(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    obj, tok = make(tiny_vision_teacher_dir, tiny_text_teacher_dir, p=1.0)
    obj.train()
    assert not any(m.training for t in obj.teachers.values() for m in t.modules())
    obj(batch_for(tok))["loss"].backward()
    frozen = {n for n, p in obj.named_parameters() if not p.requires_grad}
    assert {n for n in frozen if not n.startswith("teachers.")} == {"student.text.token_embedding.weight",
                                                                    "student.logit_bias"}  # bias: SigLIP only
    assert any(n.startswith("teachers.dino.") for n in frozen) and any(n.startswith("teachers.bert.") for n in frozen)
    for name, prm in obj.named_parameters():
        if prm.requires_grad:
            assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
        else:
            assert prm.grad is None, name


def test_unused_parameters_are_frozen_for_ddp(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    obj, _ = make(tiny_vision_teacher_dir, tiny_text_teacher_dir, p=0.0)
    assert not obj.student.visual.mask_token.requires_grad
    assert not any(p.requires_grad for p in obj.student.heads.parameters())
    obj, _ = make(tiny_vision_teacher_dir, tiny_text_teacher_dir, p=0.5, contrastive="siglip",
                  image_mask=ImageMaskConfig(mode="drop", kind="random"))
    assert obj.student.logit_bias.requires_grad and not obj.student.visual.mask_token.requires_grad
    assert obj.num_distill(2) == 1 and obj.num_distill(3) == 2


def test_student_state_has_no_teacher_weights(obj_tok):
    obj, _ = obj_tok
    keys = obj.student.state_dict().keys()
    assert not any(k.startswith("teachers") or ".model." in k for k in keys)
    assert any(k.startswith("heads.dino.") for k in keys) and any(k.startswith("heads.bert.") for k in keys)


def test_cached_targets_equal_live_teachers(obj_tok):
    obj, tok = obj_tok
    batch = batch_for(tok)
    state = copy.deepcopy(obj.rng_state())
    live = obj(batch)
    obj.set_rng_state(state)
    k = obj.num_distill(8)
    teacher_in = obj._teacher_input(obj.teachers["dino"], batch, batch["image"], k)
    targets = {"dino": {"patch": obj.teachers["dino"](teacher_in)["patch"].half()},
               "bert": {"tokens": obj.teachers["bert"](batch["input_ids"][:k],
                                                       batch["attention_mask"][:k])["tokens"].half()}}
    dino, bert = Spy(obj.teachers["dino"]), Spy(obj.teachers["bert"])
    cached = obj({**batch, "targets": targets})
    assert dino.sizes == [] and bert.sizes == []
    for key in ("contrastive_loss", "dino_loss", "bert_loss"):
        torch.testing.assert_close(cached[key], live[key], atol=2e-3, rtol=2e-3)  # fp16 storage


def test_rendered_teacher_view_is_used_when_given(obj_tok):
    obj, tok = obj_tok
    batch = batch_for(tok)
    rendered = torch.rand(8, 3, 16, 16)
    got = obj._teacher_input(obj.teachers["dino"], {**batch, "teacher_image": {16: rendered}}, batch["image"], 2)
    assert torch.equal(got, rendered[:2])
    derived = obj._teacher_input(obj.teachers["dino"], batch, batch["image"], 2)
    assert derived.shape == (2, 3, 16, 16) and derived.min() >= 0 and derived.max() <= 1


@pytest.mark.parametrize("positions", ["masked", "all"])
def test_masked_distillation_matches_manual_loss(tiny_vision_teacher_dir, tiny_text_teacher_dir, positions):
    """The dino term equals a hand-computed cosine loss over the masked (or all) patches of the masked pass."""
    obj, tok = make(tiny_vision_teacher_dir, tiny_text_teacher_dir, p=0.5, distill_positions=positions,
                    image_mask=ImageMaskConfig(kind="random", ratio=0.5))
    batch = batch_for(tok)
    state = copy.deepcopy(obj.rng_state())
    out = obj(batch)
    obj.set_rng_state(state)
    from sfclip.masking import patch_mask

    mask = patch_mask(obj.cfg.image_mask, 4, (4, 4), obj.rng)
    sub = obj.student.visual(batch["image"][:4], mask, "replace")
    target = obj.teachers["dino"](obj._teacher_input(obj.teachers["dino"], batch, batch["image"], 4))["patch"]
    target = torch.nn.functional.layer_norm(target, (20,))
    pred = obj.student.heads["dino"](sub["patch"])
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1)
    scored = mask if positions == "masked" else torch.ones_like(mask)
    torch.testing.assert_close(out["dino_loss"], (1 - cos[scored]).mean())
    # The references are scored on the same positions: the per-sample mean is each row's own mean target.
    own = target.mean(1, keepdim=True).expand_as(target)
    ref = 1 - torch.nn.functional.cosine_similarity(own, target, dim=-1)
    torch.testing.assert_close(out["dino_ref/sample_mean"], ref[scored].mean())
    # First batch: the running means are this batch's own means.
    pos = target.mean(0, keepdim=True).expand_as(target)
    ref = 1 - torch.nn.functional.cosine_similarity(pos, target, dim=-1)
    torch.testing.assert_close(out["dino_ref/position_mean"], ref[scored].mean())


def test_drop_mode_scores_kept_patches(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    obj, tok = make(tiny_vision_teacher_dir, tiny_text_teacher_dir, p=0.5,
                    image_mask=ImageMaskConfig(kind="random", ratio=0.5, mode="drop"))
    visual = Spy(obj.student.visual.blocks[0])
    out = obj(batch_for(tok))
    assert torch.isfinite(out["dino_loss"])
    assert visual.sizes == [8, 4]  # full pass, then the masked subset


def test_align_patch_grid_resamples():
    x = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 3)  # 2x2 grid
    up = align_patch_grid(x, (4, 4))
    assert up.shape == (1, 16, 3)
    grid = torch.arange(16.0).view(4, 4)
    down = align_patch_grid(grid.reshape(1, 16, 1), (2, 2))
    torch.testing.assert_close(down.view(2, 2), grid.view(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(2, 2, 4).mean(-1))
    same = torch.randn(2, 9, 5)
    assert align_patch_grid(same, (3, 3)) is same


def test_resample_alignment_end_to_end(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    """A teacher run at its own size with a different grid (24 px / 4 = 6x6) is resampled to 4x4."""
    teachers = [TeacherConfig(name="dino", source=str(tiny_vision_teacher_dir), align="resample", image_size=24)]
    ocfg = ObjectiveConfig(distill_fraction=0.5, teachers=teachers)
    obj, tok = build_objective(ocfg, StudentConfig(model="test-tiny", text_embedding="own",
                                                   tokenizer=str(tiny_text_teacher_dir)), MEAN, STD)
    assert obj.teachers["dino"].grid == (6, 6)
    out = obj(batch_for(tok))
    assert torch.isfinite(out["dino_loss"]) and out["dino_loss"] > 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="distill_fraction"):
        ObjectiveConfig(distill_fraction=1.5)
    with pytest.raises(ValueError, match="unique"):
        ObjectiveConfig(teachers=[TeacherConfig(name="a", source="x"), TeacherConfig(name="a", source="y")])
    with pytest.raises(ValueError, match="inherited needs a text teacher"):
        build_objective(ObjectiveConfig(), StudentConfig(model="test-tiny", tokenizer="unused"), MEAN, STD, teachers={})


def test_masks_are_reproducible_from_rng_state(obj_tok):
    obj, tok = obj_tok
    batch = batch_for(tok)
    obj.reseed(5)
    a = obj(batch)["loss"]
    obj.reseed(5)
    b = obj(batch)["loss"]
    obj.reseed(6)
    c = obj(batch)["loss"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert isinstance(obj.rng_state(), dict) and np.random.default_rng().bit_generator.state


def test_trimmed_padding_gives_the_full_width_step(obj_tok, monkeypatch):
    """The objective drops all-padding caption columns (student passes and text teacher); the full-width step
    is the reference: same losses and gradients, with BERT masks drawn over the real columns in both."""
    import sfclip.objective as objective_mod
    from sfclip.masking import bert_mask
    from sfclip.models.text import padded_length

    obj, tok = obj_tok
    batch = batch_for(tok)
    T = batch["input_ids"].shape[1]
    assert int(batch["attention_mask"].sum(1).max()) < T  # there is padding to drop

    def mask_real_columns(ids, am, *args):
        L = int(padded_length(am))
        out, sel = bert_mask(ids[:, :L], am[:, :L], *args)
        return torch.cat([out, ids[:, L:]], 1), torch.nn.functional.pad(sel, (0, ids.shape[1] - L))

    monkeypatch.setattr(objective_mod, "bert_mask", mask_real_columns)
    ref_obj = copy.deepcopy(obj)
    bert = Spy(obj.teachers["bert"])
    out = obj(batch)
    out["loss"].backward()
    assert bert.sizes == [2]
    monkeypatch.setattr(objective_mod, "padded_length", lambda am: torch.tensor(am.shape[1]))
    ref_bert_widths = []
    ref_obj.teachers["bert"].register_forward_pre_hook(lambda m, a: ref_bert_widths.append(a[0].shape[1]))
    ref = ref_obj(batch)
    ref["loss"].backward()
    assert ref_bert_widths == [T]  # the reference really ran full width
    for key in ("contrastive_loss", "dino_loss", "bert_loss", "loss"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6)
    for (name, p), (_, q) in zip(obj.student.named_parameters(), ref_obj.student.named_parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def make_summary(vision_dir, text_dir, p=0.25, summary_weight=0.5):
    teachers = [TeacherConfig(name="dino", kind="vision", source=str(vision_dir), summary_weight=summary_weight),
                TeacherConfig(name="bert", kind="text", source=str(text_dir))]
    return build_objective(ObjectiveConfig(distill_fraction=p, teachers=teachers), StudentConfig(model="test-tiny"),
                           MEAN, STD)


def test_summary_term_matches_a_manual_cosine_and_trains_the_class_token(tiny_vision_teacher_dir,
                                                                         tiny_text_teacher_dir):
    """summary_weight: the student's class token (unmasked view, distilled rows) through the head's summary map
    against the layer-normed teacher class token; in the total with its weight; gradients reach the map and
    the class token, and every trainable parameter still gets one."""
    obj, tok = make_summary(tiny_vision_teacher_dir, tiny_text_teacher_dir)
    obj.train()
    batch = batch_for(tok)
    k = obj.num_distill(8)
    out = obj(batch)
    with torch.no_grad():
        cls = obj.student.visual(batch["image"])["cls"][:k]
        t = obj.teachers["dino"](obj._teacher_input(obj.teachers["dino"], batch, batch["image"], k))["cls"]
        want = 1 - torch.nn.functional.cosine_similarity(
            obj.student.heads["dino"].summary(cls), torch.nn.functional.layer_norm(t, t.shape[-1:]), dim=-1).mean()
    torch.testing.assert_close(out["dino_summary_loss"], want, atol=1e-5, rtol=0)
    terms = out["contrastive_loss"] + out["dino_loss"] + out["bert_loss"] + 0.5 * out["dino_summary_loss"]
    torch.testing.assert_close(out["loss"], terms)
    out["loss"].backward()
    assert obj.student.heads["dino"].summary.weight.grad.abs().sum() > 0
    assert obj.student.visual.cls_token.grad is not None
    assert all(p.grad is not None for p in obj.parameters() if p.requires_grad)


def test_summary_from_the_cache_and_a_cache_without_it(tiny_vision_teacher_dir, tiny_text_teacher_dir):
    obj, tok = make_summary(tiny_vision_teacher_dir, tiny_text_teacher_dir)
    batch = batch_for(tok)
    k = obj.num_distill(8)
    state = copy.deepcopy(obj.rng_state())
    live = obj(batch)
    res = obj.teachers["dino"](obj._teacher_input(obj.teachers["dino"], batch, batch["image"], k))
    text = obj.teachers["bert"](batch["input_ids"][:k], batch["attention_mask"][:k])["tokens"].half()
    targets = {"dino": {"patch": res["patch"].half(), "cls": res["cls"].half()}, "bert": {"tokens": text}}
    obj.set_rng_state(state)
    cached = obj({**batch, "targets": targets})
    torch.testing.assert_close(cached["dino_summary_loss"], live["dino_summary_loss"], atol=2e-3, rtol=2e-3)
    del targets["dino"]["cls"]  # a cache built before summary tokens were stored
    with pytest.raises(ValueError, match="rebuild it with `sfclip targets RECIPE`"):
        obj({**batch, "targets": targets})


def test_summary_weight_is_a_vision_option():
    with pytest.raises(ValueError, match="summary_weight is a vision-teacher option"):
        TeacherConfig(name="bert", kind="text", summary_weight=1.0)
    with pytest.raises(ValueError, match="summary_weight"):
        TeacherConfig(name="dino", kind="vision", summary_weight=-1.0)
