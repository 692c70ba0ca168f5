"""Assemble a student, its teachers and the objective from configuration.

The text teacher decides the tokenizer: an inheriting student takes its vocabulary size, embedding width,
special ids and embedding table. Each teacher gets a distillation head in the student.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .models import SFCLIP, HeadConfig, list_models, resolve_model_config
from .objective import Objective, ObjectiveConfig
from .teachers import Teacher, TeacherConfig, TextTeacher, build_teacher
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["StudentConfig", "build_objective", "build_student", "build_teachers"]

log = logging.getLogger(__name__)


@dataclass
class StudentConfig:
    model: str = "vit-b-16"
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted model overrides, e.g. {"text.layers": 6}
    # "inherited": take the text teacher's tokenizer and embedding table (SF-CLIP); "own": trainable table.
    text_embedding: str = "inherited"
    freeze_embeddings: bool = True
    # Tokenizer when no text teacher provides one (hub id or folder); with a text teacher, its own is used.
    tokenizer: str = ""
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.model not in list_models():
            raise ValueError(f"student.model {self.model!r} is not a registered model; known: "
                             f"{', '.join(list_models())} (`sfclip models` describes them)")
        if self.text_embedding not in ("inherited", "own"):
            raise ValueError(f"student.text_embedding must be 'inherited' or 'own', got {self.text_embedding!r}")


def build_student(scfg: StudentConfig, teachers: dict[str, Teacher], tokenizer: Tokenizer,
                  teacher_cfgs: list[TeacherConfig] | None = None) -> SFCLIP:
    """The student with one head per teacher (options from `teacher_cfgs` by name); an inheriting text
    tower gets the text teacher's table."""
    mcfg = resolve_model_config(scfg.model, scfg.overrides)
    text_teacher = next((t for t in teachers.values() if isinstance(t, TextTeacher)), None)
    t = mcfg.text
    t.pad_id, t.eos_id = tokenizer.pad_id, tokenizer.eos_id if tokenizer.eos_id is not None else -1
    table = None
    if scfg.text_embedding == "inherited":
        if text_teacher is None:
            raise ValueError("student.text_embedding=inherited needs a text teacher; add one to objective.teachers "
                             "or set student.text_embedding=own with student.tokenizer")
        table = text_teacher.input_embeddings()
        t.embedding, t.vocab_size, t.embed_width = "inherited", table.shape[0], table.shape[1]
        t.freeze_embeddings = scfg.freeze_embeddings
    else:
        t.embedding, t.vocab_size, t.embed_width = "own", tokenizer.vocab_size, 0
    opts = {tc.name: tc for tc in teacher_cfgs or []}
    mcfg.heads = [HeadConfig(name=name, tower=tt.kind, width=tt.width, kind=opts[name].head, hidden=opts[name].head_hidden,
                             norm=opts[name].norm) if name in opts else HeadConfig(name=name, tower=tt.kind, width=tt.width)
                  for name, tt in teachers.items()]
    mcfg.__post_init__()
    t.__post_init__()
    model = SFCLIP(mcfg)
    if table is not None:
        model.text.inherit_embeddings(table)
    model.set_grad_checkpointing(scfg.grad_checkpointing)
    return model


def build_teachers(ocfg: ObjectiveConfig, scfg: StudentConfig, targets: str = "", data_cfg=None) -> dict[str, Teacher]:
    """The run's teachers by name. With a target cache (`targets`, checked against the run with `data_cfg`),
    each vision teacher it serves is a weightless stand-in; text teachers always load, since the student
    inherits their tokenizer and embedding table."""
    mcfg = resolve_model_config(scfg.model, scfg.overrides)
    served: dict[str, dict] = {}
    if targets:
        from .data.targets import check_run, read_meta

        meta = read_meta(targets)
        names = check_run(meta, ocfg.teachers, data_cfg, mcfg.vision.grid, mcfg.text.context_length, targets)
        served = {n: meta["teachers"][n] for n in names}
    teachers: dict[str, Teacher] = {}
    for tc in ocfg.teachers:
        if tc.kind == "vision" and tc.name in served:
            from .teachers.cached import CachedVisionTeacher

            log.info("teacher %s: targets from the cache %s", tc.name, targets)
            teachers[tc.name] = CachedVisionTeacher.from_meta(tc.name, served[tc.name], targets)
            continue
        log.info("loading teacher %s from %s", tc.name, tc.source)
        teachers[tc.name] = build_teacher(tc, student_grid=mcfg.vision.grid)
    return teachers


def build_objective(ocfg: ObjectiveConfig, scfg: StudentConfig, image_mean: list[float], image_std: list[float],
                    teachers: dict[str, Teacher] | None = None) -> tuple[Objective, Tokenizer]:
    """Build (or take prebuilt) teachers, the student and the objective; returns it with the tokenizer."""
    has_text = any(tc.kind == "text" for tc in ocfg.teachers) if teachers is None else \
        any(isinstance(t, TextTeacher) for t in teachers.values())
    if scfg.text_embedding == "inherited" and not has_text:
        raise ValueError("student.text_embedding=inherited needs a text teacher; add one to objective.teachers "
                         "or set student.text_embedding=own with student.tokenizer")
    if teachers is None:
        teachers = build_teachers(ocfg, scfg)
    ctx = resolve_model_config(scfg.model, scfg.overrides).text.context_length
    text_teacher = next((t for t in teachers.values() if isinstance(t, TextTeacher)), None)
    if text_teacher is not None:
        tokenizer = Tokenizer(text_teacher.tokenizer, ctx, text_teacher.prefix)
    elif scfg.tokenizer:
        tokenizer = load_tokenizer(scfg.tokenizer, context_length=ctx)
    else:
        raise ValueError("no tokenizer: add a text teacher to objective.teachers or set student.tokenizer")
    student = build_student(scfg, teachers, tokenizer, ocfg.teachers)
    objective = Objective(ocfg, student, teachers, tokenizer.special_ids, tokenizer.mask_id, image_mean, image_std)
    return objective, tokenizer

