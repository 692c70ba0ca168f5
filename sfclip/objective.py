"""One SF-CLIP training step's science: contrastive loss plus selective masked distillation.

`Objective` is the one module DDP wraps. It holds the student, the frozen teachers and the masking RNG.
For a batch of B pairs it computes the contrastive loss on the whole batch and, on the first
`k = round(p * B)` rows only, runs the masked student pass, the teachers (or reads cached targets) and
the per-teacher distillation losses. The total is the weighted sum of the `*_loss` terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .losses import DISTILL_LOSSES, ContrastiveLoss, masked_distill_loss
from .losses.contrastive import splice_rows
from .masking import ImageMaskConfig, TextMaskConfig, bert_mask, patch_mask
from .models import SFCLIP
from .models.text import padded_length
from .teachers import Teacher, TeacherConfig, TextTeacher, VisionTeacher

__all__ = ["ObjectiveConfig", "Objective", "align_patch_grid"]


@dataclass
class ObjectiveConfig:
    contrastive: str = "clip"  # clip | siglip
    contrastive_weight: float = 1.0
    # Fraction p of each batch that gets masked distillation (teachers run only there). Ours: 0.25.
    distill_fraction: float = 0.25
    # "separate": a second, masked student pass on the subset; "shared": one masked pass serves both losses.
    image_view: str = "separate"
    image_mask: ImageMaskConfig = field(default_factory=ImageMaskConfig)
    text_mask: TextMaskConfig = field(default_factory=TextMaskConfig)
    # Where distillation is scored on the masked view: "all" positions (ours, measured: the masked positions
    # alone left a from-scratch student at the per-position-mean floor, docs/defaults.md) or only the "masked"
    # ones (BEiT / EVA-02 / BERT). With dropped patches the kept ones are scored either way (UMT).
    distill_positions: str = "all"
    # Log, beside each distillation loss, the loss of three reference predictors scored the same way:
    # the running dataset-mean target, the running per-position mean, and each sample's own mean target.
    # A loss that never goes below the per-position mean has learned a spatial prior and nothing about the
    # sample; below the per-sample mean, the student predicts where things are in this very image.
    log_references: bool = True
    image_loss: str = "cosine"  # EVA-02
    text_loss: str = "smooth_l1"  # data2vec
    teachers: list[TeacherConfig] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.distill_fraction <= 1.0:
            raise ValueError(f"objective.distill_fraction must be in [0, 1], got {self.distill_fraction}")
        if self.image_view not in ("separate", "shared"):
            raise ValueError(f"objective.image_view must be 'separate' or 'shared', got {self.image_view!r}")
        for key in ("image_loss", "text_loss"):
            if getattr(self, key) not in DISTILL_LOSSES:
                raise ValueError(f"objective.{key} must be one of {DISTILL_LOSSES}, got {getattr(self, key)!r}")
        if self.distill_positions not in ("masked", "all"):
            raise ValueError(f"objective.distill_positions must be 'masked' or 'all', got {self.distill_positions!r}")
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names) or "contrastive" in names:
            raise ValueError(f"teacher names must be unique and not 'contrastive', got {names}")
        if sum(t.kind == "text" for t in self.teachers) > 1:
            raise ValueError("at most one text teacher: the student inherits its tokenizer")


def align_patch_grid(patch: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resample teacher patch tokens (B, n*n, D) onto the student grid -> (B, h*w, D)."""
    B, n, D = patch.shape
    g = int(round(n**0.5))
    if (g, g) == tuple(grid):
        return patch
    x = patch.transpose(1, 2).reshape(B, D, g, g).float()  # (B, D, g, g)
    mode = "area" if g >= grid[0] and g >= grid[1] else "bilinear"
    x = F.interpolate(x, size=grid, mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return x.flatten(2).transpose(1, 2)  # (B, h*w, D)


class Objective(nn.Module):
    """Student + frozen teachers + masking + losses; `forward(batch) -> {"loss", "*_loss", metrics}`."""

    def __init__(self, cfg: ObjectiveConfig, student: SFCLIP, teachers: dict[str, Teacher],
                 special_ids: list[int], mask_id: int | None, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = student
        self.teachers = nn.ModuleDict(teachers)
        self.tcfg = {t.name: t for t in cfg.teachers}
        self.contrastive = ContrastiveLoss(cfg.contrastive)
        self.special_ids = list(special_ids)
        self.mask_id = mask_id
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.rng = np.random.default_rng(cfg.seed)
        self._ref_means: dict[str, dict[str, torch.Tensor]] = {}  # running reference means (diagnostics only)
        for name in teachers:
            if name not in student.heads:
                raise ValueError(f"teacher {name!r} has no distillation head in the student")
        if any(isinstance(t, TextTeacher) for t in teachers.values()) and mask_id is None:
            raise ValueError("text distillation needs a tokenizer with a mask token")
        self._freeze_unused()

    def _freeze_unused(self) -> None:
        """Parameters this objective never uses get no gradient, so DDP needs no unused-parameter search."""
        s, cfg = self.student, self.cfg
        s.logit_bias.requires_grad_(cfg.contrastive == "siglip")
        masks_images = cfg.image_view == "shared" or (cfg.distill_fraction > 0 and bool(self.vision_teachers))
        s.visual.mask_token.requires_grad_(masks_images and cfg.image_mask.mode == "replace")
        for name, head in s.heads.items():
            head.requires_grad_(cfg.distill_fraction > 0 and name in self.teachers)

    # -- reproducibility: the masking RNG is part of the training state -------------------------------
    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def reseed(self, seed: int) -> None:
        """Per-rank streams: call with `cfg.seed + rank` so ranks draw different masks."""
        self.rng = np.random.default_rng(seed)

    @property
    def vision_teachers(self) -> dict[str, VisionTeacher]:
        return {n: t for n, t in self.teachers.items() if isinstance(t, VisionTeacher)}

    @property
    def text_teachers(self) -> dict[str, TextTeacher]:
        return {n: t for n, t in self.teachers.items() if isinstance(t, TextTeacher)}

    def num_distill(self, batch_size: int) -> int:
        """Rows that get distillation: round(p * B), at least one when p > 0 (every head is used each step)."""
        if not len(self.teachers) or self.cfg.distill_fraction == 0:
            return 0
        return max(1, int(round(self.cfg.distill_fraction * batch_size)))

    @torch.no_grad()
    def contrastive_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalized image and text embeddings (B, E) the contrastive term scores, without gradients:
        gradient accumulation's first pass, whose results come back to `forward` as `cached`."""
        if self.cfg.image_view == "shared":
            raise ValueError("objective.image_view=shared draws the contrastive view's mask in each pass, so it "
                             "cannot be cached across micro-batches; use image_view=separate with train.grad_accum")
        am = batch["attention_mask"]
        L = int(padded_length(am))
        img = self.student.visual(batch["image"])["pooled"]  # (B, D)
        txt = self.student.text(batch["input_ids"][:, :L], am[:, :L])["pooled"]  # (B, D)
        return F.normalize(img, dim=-1), F.normalize(txt, dim=-1)

    def forward(self, batch: dict, cached: dict | None = None) -> dict[str, torch.Tensor]:
        """`cached` (gradient accumulation): `{"image", "text"}` (N, E) from `contrastive_features` of every
        micro-batch of the step, `"start"` (this batch's first row in them) and `"micro_batches"`; the
        contrastive term then scores this batch's rows against all N (`losses.contrastive.splice_rows`)."""
        images, ids, am = batch["image"], batch["input_ids"], batch["attention_mask"]
        B = images.shape[0]
        k = self.num_distill(B)
        mcfg = self.cfg.image_mask
        grid = (images.shape[-2] // self.student.visual.patch_size, images.shape[-1] // self.student.visual.patch_size)
        n = grid[0] * grid[1]
        num_keep = n - mcfg.num_masked(n)
        shared = self.cfg.image_view == "shared"
        vision_needed = k > 0 and len(self.vision_teachers) > 0

        if shared:  # one masked pass for every row (FLIP); distillation reads its first k rows
            mask = patch_mask(mcfg, B, grid, self.rng, images.device)
            vis = self.student.visual(images, mask, mcfg.mode, num_keep)
            masked_vis = {"patch": vis["patch"][:k], "mask": mask[:k],
                          "keep_idx": None if vis["keep_idx"] is None else vis["keep_idx"][:k]}
        else:
            vis = self.student.visual(images)
            masked_vis = None
            if vision_needed:
                mask = patch_mask(mcfg, k, grid, self.rng, images.device)
                sub = self.student.visual(images[:k], mask, mcfg.mode, num_keep)
                masked_vis = {"patch": sub["patch"], "mask": mask, "keep_idx": sub["keep_idx"]}
        # Trailing all-padding columns change no real token's output: drop them, for the whole batch and,
        # tighter, for the distillation subset (one host sync on a GPU for both).
        L, Lk = torch.stack([padded_length(am), padded_length(am[:max(k, 1)])]).tolist()
        txt = self.student.text(ids[:, :L], am[:, :L])
        img_emb = F.normalize(vis["pooled"], dim=-1)
        txt_emb = F.normalize(txt["pooled"], dim=-1)
        if cached is not None:
            img_emb = splice_rows(cached["image"], img_emb, cached["start"], cached["micro_batches"])  # (N, E)
            txt_emb = splice_rows(cached["text"], txt_emb, cached["start"], cached["micro_batches"])  # (N, E)
        s = self.student
        out = {"contrastive_loss": self.contrastive(img_emb, txt_emb, s.logit_scale, s.logit_bias)}
        weights = {"contrastive_loss": self.cfg.contrastive_weight}

        if vision_needed:
            for name, teacher in self.vision_teachers.items():
                targets = self._vision_targets(name, teacher, batch, images, k)
                out[f"{name}_loss"] = self._vision_distill(name, targets["patch"], grid, masked_vis, out)
                weights[f"{name}_loss"] = self.tcfg[name].weight
                if self.tcfg[name].summary_weight > 0:
                    out[f"{name}_summary_loss"] = self._summary_distill(name, targets.get("cls"), vis["cls"][:k])
                    weights[f"{name}_summary_loss"] = self.tcfg[name].summary_weight
        if k > 0 and self.text_teachers:
            for name, teacher in self.text_teachers.items():
                out[f"{name}_loss"] = self._text_distill(name, teacher, batch, ids[:k, :Lk], am[:k, :Lk], out)
                weights[f"{name}_loss"] = self.tcfg[name].weight
        out["loss"] = sum(weights[key] * out[key] for key in weights)
        out["logit_scale"] = self.student.logit_scale.detach().exp()
        out["distill_rows"] = torch.tensor(float(k))
        return out

    def _teacher_input(self, teacher: VisionTeacher, batch: dict, images: torch.Tensor, k: int) -> torch.Tensor:
        """The subset rendered at the teacher's size in [0, 1]; resized from the student view if the data
        pipeline did not render it."""
        rendered = batch.get("teacher_image", {}).get(teacher.image_size)
        if rendered is not None:  # uint8 from the data pipeline
            x = rendered[:k]
            return x.float().div_(255.0) if x.dtype == torch.uint8 else x
        x = images[:k].float() * self.image_std + self.image_mean  # (k, 3, H, W) in [0, 1]
        if x.shape[-1] != teacher.image_size or x.shape[-2] != teacher.image_size:
            x = F.interpolate(x, size=(teacher.image_size,) * 2, mode="bicubic", align_corners=False, antialias=True)
        return x.clamp(0.0, 1.0)

    def _vision_targets(self, name: str, teacher: VisionTeacher, batch: dict, images: torch.Tensor,
                        k: int) -> dict[str, torch.Tensor]:
        """The teacher's `patch` (k, Nt, Dt) and summary `cls` (k, Dt) of the distilled rows: from the target
        cache when the batch carries it (a cache written before summaries were stored has no `cls`), else
        from one teacher pass."""
        cached = batch.get("targets", {}).get(name)
        if cached is not None:
            return {field: value[:k] for field, value in cached.items()}
        return teacher(self._teacher_input(teacher, batch, images, k))

    def _summary_distill(self, name: str, target: torch.Tensor | None, cls: torch.Tensor) -> torch.Tensor:
        """Cosine between the summary map of the student's class token (k, D) and the layer-normed teacher
        summary token (k, Dt)."""
        if target is None:
            raise ValueError(f"teacher {name!r}: summary_weight > 0 needs its summary token, and the target cache "
                             "has none (built before sfclip stored it): rebuild it with `sfclip targets RECIPE`")
        summary = self.student.heads[name].summary
        if summary is None:
            raise ValueError(f"teacher {name!r}: the student's head has no summary map; build the student with "
                             "this teacher's summary_weight set (sfclip.build.build_student does)")
        target = F.layer_norm(target.float(), target.shape[-1:])  # (k, Dt)
        return 1.0 - F.cosine_similarity(summary(cls).float(), target, dim=-1).mean()

    def _vision_distill(self, name: str, target: torch.Tensor, grid: tuple[int, int], masked_vis: dict,
                        out: dict) -> torch.Tensor:
        """target: the teacher's patch tokens (k, Nt, Dt)."""
        head = self.student.heads[name]
        target = head.normalize_target(align_patch_grid(target, grid))  # (k, N, Dt)
        pred = head(masked_vis["patch"])  # (k, N or K, Dt)
        kind = self.tcfg[name].loss or self.cfg.image_loss
        weight = None
        if masked_vis["keep_idx"] is not None:  # dropped patches: score the kept ones (UMT)
            keep = masked_vis["keep_idx"]  # (k, K)
            weight = torch.zeros(target.shape[:2], dtype=torch.bool, device=target.device).scatter_(1, keep, True)
        elif self.cfg.distill_positions == "masked":
            weight = masked_vis["mask"]
        if self.cfg.log_references:
            out.update(self._references(name, target, None, weight, kind))
        if masked_vis["keep_idx"] is not None:
            target = target.gather(1, masked_vis["keep_idx"].unsqueeze(-1).expand(-1, -1, target.shape[-1]))
            weight = None
        return masked_distill_loss(pred, target, weight, kind)

    def _text_distill(self, name: str, teacher: TextTeacher, batch: dict, ids: torch.Tensor,
                      am: torch.Tensor, out: dict) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        masked_ids, selected = bert_mask(ids, am, self.special_ids, self.mask_id,
                                         self.student.text.cfg.vocab_size, self.cfg.text_mask, g)
        cached = batch.get("targets", {}).get(name)
        if cached is not None:
            target = cached["tokens"][:ids.shape[0], :ids.shape[1]]  # cached at full width: (k, T, Dt)
        else:
            target = teacher(ids, am)["tokens"]  # (k, T, Dt)
        head = self.student.heads[name]
        target = head.normalize_target(target)
        pred = head(self.student.text(masked_ids, am)["tokens"])  # (k, T, Dt)
        weight = selected if self.cfg.distill_positions == "masked" else am.bool()
        kind = self.tcfg[name].loss or self.cfg.text_loss
        if self.cfg.log_references:
            out.update(self._references(name, target, am.bool(), weight, kind))
        return masked_distill_loss(pred, target, weight, kind)

    @torch.no_grad()
    def _references(self, name: str, target: torch.Tensor, valid: torch.Tensor | None, weight: torch.Tensor | None,
                    kind: str, momentum: float = 0.02) -> dict[str, torch.Tensor]:
        """Losses of three constant predictors, scored like the student on the same positions.

        target (B, N, D) normalized; valid (B, N) real positions (text padding is not), None = all; weight
        (B, N) scored positions, None = all. The dataset and per-position means are running means over the
        batches seen (the first batch sets them); the per-sample mean is each row's own mean over its valid
        positions, an oracle that knows the sample but not where anything is in it.
        """
        B, N, D = target.shape
        t = target.float()
        v = torch.ones(B, N, device=t.device) if valid is None else valid.float()  # (B, N)
        row_mean = (t * v[..., None]).sum(1) / v.sum(1, keepdim=True).clamp_min(1.0)  # (B, D)
        data_mean = (t * v[..., None]).sum((0, 1)) / v.sum().clamp_min(1.0)  # (D,)
        pos_count = v.sum(0)  # (N,)
        pos_mean = (t * v[..., None]).sum(0) / pos_count.clamp_min(1.0)[:, None]  # (N, D)
        state = self._ref_means.get(name)
        if state is None or state["position"].shape[0] < N or state["dataset"].device != t.device:
            state = {"dataset": data_mean, "position": torch.zeros(max(N, 1), D, device=t.device),
                     "seen": torch.zeros(max(N, 1), dtype=torch.bool, device=t.device)}
            self._ref_means[name] = state
        else:
            state["dataset"] = state["dataset"].lerp(data_mean, momentum)
        present = pos_count > 0  # (N,)
        pos_state, seen = state["position"][:N], state["seen"][:N]
        blend = torch.where(seen, torch.full_like(pos_count, momentum), torch.ones_like(pos_count))[:, None]
        pos_state.copy_(torch.where(present[:, None], pos_state.lerp(pos_mean, blend), pos_state))
        seen |= present
        scored = v.bool() if weight is None else weight.bool() & v.bool()
        preds = {"dataset_mean": state["dataset"].expand(B, N, D), "position_mean": pos_state.expand(B, N, D),
                 "sample_mean": row_mean[:, None].expand(B, N, D)}
        return {f"{name}_ref/{key}": masked_distill_loss(p, t, scored, kind) for key, p in preds.items()}
