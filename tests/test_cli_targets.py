"""`sfclip targets RECIPE`: the target cache that `data.targets` names, built from the command line, and read
by the run of the same recipe."""

import json

from sfclip.build import build_teachers
from sfclip.cli import main
from sfclip.config import load_config
from sfclip.teachers.cached import CachedVisionTeacher

CACHE_VIEW = ["data.crop_scale=[1.0,1.0]", "data.hflip=false"]


def test_sfclip_targets_builds_the_cache_the_run_reads(tmp_path, pair_shards, tiny_vision_teacher_dir,
                                                       tiny_text_teacher_dir, recipe_writer, capsys):
    (tmp_path / "shards" / "sizes.json").write_text(json.dumps({f"{s:05d}.tar": 16 for s in range(4)}))
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs")
    cache = tmp_path / "cache"
    overrides = [f"data.targets={cache}", *CACHE_VIEW]
    assert main(["targets", str(recipe), *overrides, "--batch-size", "16", "--device", "cpu"]) == 0
    assert f"target cache ready: {cache}" in capsys.readouterr().out
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["complete"] and meta["num_rows"] == 64 and sorted(meta["teachers"]) == ["bert", "dino"]
    assert meta["teachers"]["dino"]["grid"] == [4, 4]  # the test-tiny student's grid (32 px, patch 8)

    cfg = load_config(recipe, overrides)
    teachers = build_teachers(cfg.objective, cfg.student, cfg.data.targets, cfg.data)
    assert isinstance(teachers["dino"], CachedVisionTeacher)


def test_sfclip_targets_without_data_targets_is_one_line(tmp_path, pair_shards, tiny_vision_teacher_dir,
                                                         tiny_text_teacher_dir, recipe_writer, capsys):
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs")
    assert main(["targets", str(recipe), *CACHE_VIEW]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "data.targets is empty" in err[0]
    assert main(["targets", str(recipe), f"data.targets={tmp_path / 'c'}"]) == 2  # a random crop: refused
    assert "crop_scale" in capsys.readouterr().err
