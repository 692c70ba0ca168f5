"""The teacher protocol: a frozen unimodal model that returns named features.

Every teacher family (transformers, timm, the packaged offline models) subclasses `Teacher`. A teacher
is frozen, stays in eval mode whatever its parent does, runs under `torch.inference_mode`, and owns
its preprocessing (normalization, resolution) and, for text, its tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..losses.distill import DISTILL_LOSSES
from ..models.heads import HEAD_KINDS, TARGET_NORMS, TOWERS
from ..precision import auto_dtype

__all__ = ["Teacher", "TeacherConfig", "VisionTeacher", "TextTeacher", "TEACHER_KINDS", "TEACHER_DTYPES",
           "TEXT_POOLINGS"]

# A teacher's kind is the student tower its head reads.
TEACHER_KINDS = TOWERS
_ALIGN = ("render", "resample")
TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")
# How a text teacher pools its tokens into one vector; "auto" = the source's own metadata, else "mean".
TEXT_POOLINGS = ("auto", "mean", "cls")


@dataclass
class TeacherConfig:
    """One frozen teacher, its distillation head and its loss.

    `source` is `hf:<hub id>`, a local transformers folder, `timm:<name>`, `offline:<name>`
    (packaged weights converted once, see `sfclip.teachers.offline`) or `efficientnet-lite0`.
    """

    name: str = "teacher"
    kind: str = "vision"  # vision | text
    source: str = ""
    # Hidden-state layers averaged into the target (negative = from the end); empty = the final output.
    layers: list[int] = field(default_factory=list)
    # Vision: the teacher's input size. 0 = chosen from the student grid ("render") or the teacher's
    # own preprocessing config ("resample").
    image_size: int = 0
    # How the teacher grid meets the student grid: render the crop at grid*teacher_patch pixels, or
    # run the teacher at its own size and resample its feature map to the student grid.
    align: str = "render"
    # Target normalization: layer norm without affine (data2vec), none, or per-channel running stats.
    norm: str = "layernorm"
    loss: str = ""  # smooth_l1 | mse | cosine; empty = the objective's default for this modality
    weight: float = 1.0
    # Vision: weight of the summary term, in which the student's class token predicts the teacher's summary
    # token (its class token; a CNN's mean feature) through the head's summary map, cosine (RADIO's summary
    # loss). 0 = off. Scored on the distilled rows from the unmasked view, alongside the patch term.
    summary_weight: float = 0.0
    head: str = "linear"  # linear (EVA-02) | mlp (RADIO-style adaptor)
    head_hidden: int = 0  # mlp hidden width; 0 = the teacher width
    # The teacher's compute dtype: float32 | bfloat16 | float16, or "auto" = bf16 where the device computes it
    # natively (CUDA, CPUs with AVX512-BF16 / AMX), fp32 elsewhere (sfclip.precision).
    dtype: str = "auto"
    # Text: the text the teacher expects before every input (E5's "query: "). None = the source's own
    # metadata (`sfclip_teacher.json` in its folder, or the known default of its hub id, see
    # `sfclip.teachers.hf.text_options`); "" = no prefix.
    prefix: str | None = None
    pooling: str = "auto"  # text: mean | cls | auto (the source's own metadata, else mean)

    def __post_init__(self) -> None:
        if self.kind not in TEACHER_KINDS:
            raise ValueError(f"teacher {self.name!r}: kind must be one of {TEACHER_KINDS}, got {self.kind!r}")
        if self.norm not in TARGET_NORMS:
            raise ValueError(f"teacher {self.name!r}: norm must be one of {TARGET_NORMS}, got {self.norm!r}")
        if self.loss and self.loss not in DISTILL_LOSSES:
            raise ValueError(f"teacher {self.name!r}: loss must be one of {DISTILL_LOSSES}, got {self.loss!r}")
        if self.head not in HEAD_KINDS:
            raise ValueError(f"teacher {self.name!r}: head must be one of {HEAD_KINDS}, got {self.head!r}")
        if self.align not in _ALIGN:
            raise ValueError(f"teacher {self.name!r}: align must be one of {_ALIGN}, got {self.align!r}")
        if self.dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher {self.name!r}: dtype must be one of {TEACHER_DTYPES}, got {self.dtype!r}")
        if self.weight < 0:
            raise ValueError(f"teacher {self.name!r}: weight must be >= 0, got {self.weight}")
        if self.summary_weight < 0 or (self.summary_weight and self.kind != "vision"):
            raise ValueError(f"teacher {self.name!r}: summary_weight is a vision-teacher option >= 0, got "
                             f"{self.summary_weight} for a {self.kind} teacher")
        if self.pooling not in TEXT_POOLINGS:
            raise ValueError(f"teacher {self.name!r}: pooling must be one of {TEXT_POOLINGS}, got {self.pooling!r}")
        if self.kind == "vision" and (self.prefix is not None or self.pooling != "auto"):
            raise ValueError(f"teacher {self.name!r}: prefix and pooling are text-teacher options; a vision teacher "
                             "takes neither")


class Teacher(nn.Module):
    """Base class: frozen parameters and a `train()` that never leaves eval mode."""

    kind: str = ""

    def __init__(self, name: str, width: int, dtype: torch.dtype | None = torch.float32) -> None:
        super().__init__()
        self.name = name
        self.width = width
        self.compute_dtype = dtype  # None = "auto": chosen per device when the teacher runs

    def effective_dtype(self, device: torch.device | str) -> torch.dtype:
        """The dtype this teacher computes in on `device` ("auto" resolved by `sfclip.precision`)."""
        return self.compute_dtype if self.compute_dtype is not None else auto_dtype(device)

    def freeze(self) -> Teacher:
        """Freeze every parameter and switch to eval mode; call at the end of `__init__`."""
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        # A teacher is never trained: its parent's .train() must not turn on dropout or batch-norm updates.
        return super().train(False)

    def _autocast(self, device: torch.device):
        dtype = self.effective_dtype(device)
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


class VisionTeacher(Teacher):
    """A vision teacher: `forward(images01) -> {"cls": (B, D), "patch": (B, N, D)}`."""

    kind = "vision"

    def __init__(self, name: str, width: int, image_size: int, patch_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype | None = torch.float32) -> None:
        super().__init__(name, width, dtype)
        self.image_size = image_size
        self.patch_size = patch_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.patch_size
        return g, g

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        return (images01 - self.mean) / self.std

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized images (B, 3, S, S) -> {"cls": (B, D), "patch": (B, N, D)}; subclasses implement."""
        raise NotImplementedError

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), self._autocast(images01.device):
            out = self.features(self.normalize(images01.float()))
        return {k: v.float() for k, v in out.items()}


class TextTeacher(Teacher):
    """A text teacher: `forward(input_ids, attention_mask) -> {"tokens": (B, T, D), "pooled": (B, D)}`."""

    kind = "text"
    prefix = ""  # text the teacher expects before every input, e.g. E5's "query: "
    pooling = "mean"  # how `pooled` is made from `tokens`: mean | cls

    def __init__(self, name: str, width: int, tokenizer, dtype: torch.dtype | None = torch.float32) -> None:
        super().__init__(name, width, dtype)
        self.tokenizer = tokenizer

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def input_embeddings(self) -> torch.Tensor:
        """The word-embedding table (V, D) that an inheriting student copies."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), self._autocast(input_ids.device):
            out = self.features(input_ids, attention_mask)
        return {k: v.float() for k, v in out.items()}


def mean_pool(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: (B, T, D), (B, T) -> (B, D)."""
    m = attention_mask.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


def square_grid(n: int) -> int:
    """Side of a square patch grid with n patches; raises if n is not a square."""
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"expected a square patch grid, got {n} patches")
    return g
