"""Assemble a student, its teachers and the objective from configuration.

The text teacher decides the tokenizer: an inheriting student takes its vocabulary size, embedding width,
special ids and embedding table. Each teacher gets a distillation head in the student.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .models import SFCLIP, HeadConfig, ModelConfig, list_models, resolve_model_config
from .models.text import TEXT_EMBEDDINGS
from .objective import Objective, ObjectiveConfig
from .teachers import Teacher, TeacherConfig, TextTeacher, build_teacher
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["StudentConfig", "student_model_config", "build_objective", "build_student",
           "build_teachers", "build_run_targets"]

log = logging.getLogger(__name__)


_NO_TEXT_TEACHER = ("student.text_embedding=inherited needs a text teacher; add one to objective.teachers "
                    "or set student.text_embedding=own with student.tokenizer")


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
    # Start the towers from existing weights (sfclip.interop.init): open_clip:DIR | open_clip:FILE |
    # open_clip:hf-hub:ORG/NAME | timm:FILE | timm:NAME; "" = random initialisation. Shapes must fit the student.
    init: str = ""
    init_towers: str = "both"  # both | vision | text
    init_strict: bool = True  # fail unless every tensor of those towers is loaded and every source tensor used

    def __post_init__(self) -> None:
        if self.model not in list_models():
            raise ValueError(f"student.model {self.model!r} is not a registered model; known: "
                             f"{', '.join(list_models())} (`sfclip models` describes them)")
        if self.init_towers not in ("both", "vision", "text"):
            raise ValueError(f"student.init_towers must be one of both, vision, text, got {self.init_towers!r}")
        if self.text_embedding not in TEXT_EMBEDDINGS:
            raise ValueError(f"student.text_embedding must be one of {TEXT_EMBEDDINGS}, got {self.text_embedding!r}")
        # Resolved once, here, so that a bad override fails with the config; never edited afterwards
        # (`student_model_config` derives the built student's config from it).
        self._model_config = resolve_model_config(self.model, self.overrides)

    @property
    def model_config(self) -> ModelConfig:
        """The preset with `overrides` applied, before the teachers fill in the text table and the heads."""
        return self._model_config


def student_model_config(scfg: StudentConfig, teachers: dict[str, Teacher], tokenizer: Tokenizer,
                         teacher_cfgs: list[TeacherConfig] | None = None) -> ModelConfig:
    """The student's `ModelConfig`, derived from `scfg.model_config`: the tokenizer's special ids, the token
    table (the text teacher's for an inheriting student) and one head per teacher (options by name)."""
    base = scfg.model_config
    text = replace(base.text, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id if tokenizer.eos_id is not None else -1)
    if scfg.text_embedding == "inherited":
        vocab, width = _text_teacher(teachers).input_embeddings().shape
        text = replace(text, embedding="inherited", vocab_size=vocab, embed_width=width,
                       freeze_embeddings=scfg.freeze_embeddings)
    else:
        text = replace(text, embedding="own", vocab_size=tokenizer.vocab_size, embed_width=0)
    opts = {tc.name: tc for tc in teacher_cfgs or []}
    heads = [HeadConfig(name=name, tower=t.kind, width=t.width, kind=opts[name].head, hidden=opts[name].head_hidden,
                        norm=opts[name].norm, summary=opts[name].summary_weight > 0)
             if name in opts else HeadConfig(name=name, tower=t.kind, width=t.width)
             for name, t in teachers.items()]
    return replace(base, text=text, heads=heads)


def _text_teacher(teachers: dict[str, Teacher]) -> TextTeacher:
    found = next((t for t in teachers.values() if isinstance(t, TextTeacher)), None)
    if found is None:
        raise ValueError(_NO_TEXT_TEACHER)
    return found


def build_student(scfg: StudentConfig, teachers: dict[str, Teacher], tokenizer: Tokenizer,
                  teacher_cfgs: list[TeacherConfig] | None = None) -> SFCLIP:
    """The student with one head per teacher (options from `teacher_cfgs` by name); an inheriting text
    tower gets the text teacher's table."""
    model = SFCLIP(student_model_config(scfg, teachers, tokenizer, teacher_cfgs))
    if scfg.text_embedding == "inherited":
        model.text.inherit_embeddings(_text_teacher(teachers).input_embeddings())
    if scfg.init:
        from .interop import init_student

        init_student(model, scfg.init, scfg.init_towers, scfg.init_strict)
    model.set_grad_checkpointing(scfg.grad_checkpointing)
    return model


def build_teachers(ocfg: ObjectiveConfig, scfg: StudentConfig, targets: str = "", data_cfg=None) -> dict[str, Teacher]:
    """The run's teachers by name. With a target cache (`targets`, checked against the run with `data_cfg`),
    each vision teacher it serves is a weightless stand-in; text teachers always load, since the student
    inherits their tokenizer and embedding table."""
    mcfg = scfg.model_config
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
    # Checked before any teacher or tokenizer loads (build_student checks again for its direct callers).
    has_text = any(tc.kind == "text" for tc in ocfg.teachers) if teachers is None else \
        any(isinstance(t, TextTeacher) for t in teachers.values())
    if scfg.text_embedding == "inherited" and not has_text:
        raise ValueError(_NO_TEXT_TEACHER)
    if teachers is None:
        teachers = build_teachers(ocfg, scfg)
    ctx = scfg.model_config.text.context_length
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


def build_run_targets(cfg: Any, device: str = "auto", batch_size: int = 64, progress: bool = True) -> Path:
    """Build the target cache that a run config's `data.targets` names (`sfclip targets RECIPE`): every teacher
    of `cfg.objective.teachers` over `cfg.data`, vision teachers sized for the student's grid, text targets at
    its context length, so that the run then reads them. `cfg` is a `sfclip.config.RunConfig`; `device`
    "auto" is CUDA where there is one. A complete cache of the same request is reused as it is."""
    if not cfg.data.targets:
        raise ValueError("data.targets is empty: name the folder to build the cache in, e.g. "
                         "data.targets=/data/cc12m-targets (the run then reads it with the same setting)")
    if not cfg.objective.teachers:
        raise ValueError("the recipe has no teachers (objective.teachers is empty): there is nothing to cache")
    import torch

    from .data.target_build import build_target_cache

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    mcfg = cfg.student.model_config
    return build_target_cache(cfg.data, cfg.objective.teachers, cfg.data.targets, batch_size=batch_size,
                              device=device, context_length=mcfg.text.context_length, student_grid=mcfg.vision.grid,
                              progress=progress)
