"""Assembling the student from configs: the model config is resolved once, validated, and derived, never edited."""

import copy

import pytest

from sfclip.build import StudentConfig, build_objective
from sfclip.objective import ObjectiveConfig
from sfclip.teachers import TeacherConfig

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def test_a_bad_model_override_fails_with_the_student_config():
    with pytest.raises(ValueError, match="bad override for model 'test-tiny'"):
        StudentConfig(model="test-tiny", overrides={"text.no_such_key": 1})


def test_the_built_model_config_is_derived_and_the_resolved_one_left_alone(tiny_vision_teacher_dir,
                                                                          tiny_text_teacher_dir):
    scfg = StudentConfig(model="test-tiny", overrides={"text.layers": 1})
    resolved = copy.deepcopy(scfg.model_config)
    teachers = [TeacherConfig(name="dino", kind="vision", source=str(tiny_vision_teacher_dir), head="mlp"),
                TeacherConfig(name="bert", kind="text", source=str(tiny_text_teacher_dir))]
    obj, tok = build_objective(ObjectiveConfig(teachers=teachers), scfg, MEAN, STD)
    assert scfg.model_config == resolved and scfg.model_config.heads == []
    built = obj.student.cfg
    table = obj.teachers["bert"].input_embeddings()
    assert built.text.layers == 1 and built.text.embedding == "inherited"
    assert (built.text.vocab_size, built.text.embed_width) == tuple(table.shape)
    assert built.text.pad_id == tok.pad_id
    assert [(h.name, h.tower, h.kind) for h in built.heads] == [("dino", "vision", "mlp"), ("bert", "text", "linear")]


def test_teacher_options_are_exactly_what_the_heads_and_losses_accept():
    import torch

    from sfclip.losses.distill import DISTILL_LOSSES, token_loss
    from sfclip.models.heads import HEAD_KINDS, TARGET_NORMS, TOWERS, DistillHead, HeadConfig
    from sfclip.teachers.base import TEACHER_KINDS

    assert TEACHER_KINDS == TOWERS
    for kind in HEAD_KINDS:
        for norm in TARGET_NORMS:
            TeacherConfig(name="t", source="x", head=kind, norm=norm)
            DistillHead(HeadConfig(name="t", width=4, kind=kind, norm=norm), in_dim=8)
    for loss in DISTILL_LOSSES:
        TeacherConfig(name="t", source="x", loss=loss)
        assert token_loss(torch.zeros(2, 4), torch.ones(2, 4), loss).shape == (2,)
    for bad in (dict(head="conv"), dict(norm="batchnorm"), dict(loss="l1"), dict(kind="audio")):
        with pytest.raises(ValueError, match="must be one of"):
            TeacherConfig(name="t", source="x", **bad)
