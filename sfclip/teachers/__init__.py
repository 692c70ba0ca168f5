"""Frozen unimodal teachers behind one small protocol (see `base.py` and README.md in this folder)."""

from __future__ import annotations

import torch

from .base import Teacher, TeacherConfig, TextTeacher, VisionTeacher

__all__ = ["Teacher", "TeacherConfig", "TextTeacher", "VisionTeacher", "build_teacher"]

# "auto" -> None: the teacher picks bf16 or fp32 per device when it runs (sfclip.precision).
_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_teacher(cfg: TeacherConfig, student_grid: int | None = None) -> Teacher:
    """Resolve `cfg.source` into a frozen teacher.

    Sources: `hf:<hub id>` or a local transformers folder; `timm:<name>`; `offline:<name>` for packaged
    weights converted once and cached (`sfclip.teachers.offline.list_offline()`); `efficientnet-lite0`.
    For a vision teacher with `align="render"` and no explicit size, the input size is chosen so that its
    patch grid equals the student's (`student_grid * teacher_patch`).
    """
    if not cfg.source:
        raise ValueError(f"teacher {cfg.name!r} has no source; e.g. source=hf:facebook/dinov2-base or "
                         "offline:dinov2-small")
    try:
        return _build(cfg, student_grid)
    except OSError as e:
        raise OSError(f"teacher {cfg.name!r}: could not load {cfg.source!r} ({str(e).splitlines()[0]}). Give a local "
                      "folder, or a hub id with network access; offline, packaged teachers are offline:<name>") from e


def _build(cfg: TeacherConfig, student_grid: int | None) -> Teacher:
    dtype = _DTYPES[cfg.dtype]
    src = cfg.source
    if src.startswith("offline:") and src != "offline:efficientnet-lite0":
        from .offline import resolve

        src = str(resolve(src.split(":", 1)[1]))
    if cfg.kind == "text":
        from .hf import load_hf_text, text_options

        # The prefix and pooling are resolved from the configured source (an `offline:` name, a hub id), not
        # from the folder it resolves to, so that they are what `check_run` expects.
        prefix, pooling = text_options(cfg.source, cfg.prefix, cfg.pooling) if src != cfg.source else \
            (cfg.prefix, cfg.pooling)
        return load_hf_text(cfg.name, src.removeprefix("hf:"), cfg.layers, dtype, prefix, pooling)
    if src in ("efficientnet-lite0", "offline:efficientnet-lite0"):
        from .efficientnet import EfficientNetLite0Teacher

        teacher: VisionTeacher = EfficientNetLite0Teacher(cfg.name, image_size=cfg.image_size or 224, dtype=dtype)
    elif src.startswith("timm:"):
        from .timm_vision import load_timm_vision

        teacher = load_timm_vision(cfg.name, src[5:], cfg.image_size, dtype)
    else:
        from .hf import load_hf_vision

        teacher = load_hf_vision(cfg.name, src.removeprefix("hf:"), cfg.image_size, cfg.layers, dtype)
    if cfg.align == "render" and not cfg.image_size and student_grid:
        teacher.image_size = student_grid * teacher.patch_size
    return teacher
