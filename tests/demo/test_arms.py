"""The demo's ablation arms: each changes only what its name says; the summary's intervals and claims."""

from pathlib import Path

import numpy as np
import pytest

from sfclip.demo.arms import ARMS, HEADLINE, VARIANTS, arm_config, summarize, with_means
from sfclip.demo.settings import demo_settings


def _cfgs():
    s = demo_settings()
    args = (s.budgets[0], Path("shards"), Path("runs"), 3, Path("targets"), Path("tok"))
    return {arm: arm_config(s, arm, *args) for arm in (*ARMS, *VARIANTS)}


def test_each_arm_changes_only_its_ingredient():
    c = _cfgs()
    clip, inherit, paper, sf = c["clip"], c["clip_inherit"], c["sfclip_paper"], c["sfclip"]
    # everything that is not the method is the same in every arm
    for cfg in c.values():
        assert cfg.data.train_data == clip.data.train_data and cfg.data.seed == 3
        assert cfg.train.steps == clip.train.steps
        assert cfg.optim == clip.optim and cfg.student.model == clip.student.model
        assert {k: v for k, v in cfg.student.overrides.items() if k != "vision.pool"} == clip.student.overrides
    assert clip.student.text_embedding == "own" and clip.objective.teachers == [] and clip.data.targets == ""
    # clip_inherit: the inherited table, no distillation, no cache, only the text teacher (for its table)
    assert inherit.student.text_embedding == "inherited" and inherit.objective.distill_fraction == 0
    assert [t.kind for t in inherit.objective.teachers] == ["text"] and inherit.data.targets == ""
    # the paper's method: both teachers, half the batch distilled, no summary term
    assert paper.objective.distill_fraction == 0.5 and paper.data.targets == "targets"
    assert [t.summary_weight for t in paper.objective.teachers if t.kind == "vision"] == [0.0]
    # ours on top: only the summary weight differs from the paper arm
    assert [t.summary_weight for t in sf.objective.teachers if t.kind == "vision"] == [1.0]
    strip = [{**t.__dict__, "summary_weight": 0} for t in sf.objective.teachers]
    assert strip == [{**t.__dict__, "summary_weight": 0} for t in paper.objective.teachers]
    # the study pins fp32 whatever the CPU; the variants change exactly that
    assert {t.dtype for a in ("sfclip", "sfclip_paper") for t in c[a].objective.teachers} == {"float32"}
    assert {cfg.train.precision for a, cfg in c.items() if not a.endswith("bf16_train")} == {"fp32"}
    assert {t.dtype for t in c["sfclip_bf16_teachers"].objective.teachers} == {"bfloat16"}
    assert c["sfclip_bf16_train"].train.precision == c["clip_bf16_train"].train.precision == "bf16"
    # the mean-pool pair: only the pooling differs from its base arm
    for arm in ("clip", "sfclip"):
        pooled = c[f"{arm}_meanpool"]
        assert pooled.student.overrides == {**c[arm].student.overrides, "vision.pool": "mean"}
        assert pooled.objective == c[arm].objective and pooled.student.text_embedding == c[arm].student.text_embedding
    with pytest.raises(ValueError, match="unknown arm"):
        arm_config(demo_settings(), "siglip", 250, Path("s"), Path("r"), 0, Path("t"), Path("k"))


def test_mean_other_is_the_per_scene_mean_of_seven_languages():
    from sfclip.demo import vocab

    per = {f"zeroshot/{lang}": np.array([i % 2 == 0, True]) for i, lang in enumerate(vocab.LANGUAGES)}
    out = with_means(per)
    others = [i % 2 == 0 for i in range(1, len(vocab.LANGUAGES))]
    np.testing.assert_allclose(out["zeroshot/mean_other"], [np.mean(others), 1.0])
    assert "zeroshot_colour/mean_other" not in out


def test_summary_claims_follow_both_intervals():
    rng = np.random.default_rng(0)
    seeds = ["0", "1", "2", "3", "4"]
    results, samples = {}, {}
    # sfclip is better than clip by ~0.2 on English zero-shot in every seed; clip_inherit equals clip
    for arm, p in (("clip", 0.3), ("clip_inherit", 0.3), ("sfclip", 0.5)):
        results[arm], samples[arm] = {}, {}
        for s in seeds:
            hits = rng.random(400) < p
            if arm == "clip_inherit":
                hits = samples["clip"][s]["zeroshot/en"].copy()
            samples[arm][s] = {"zeroshot/en": hits}
            results[arm][s] = {"zeroshot/en/acc1": float(hits.mean()), "segmentation/miou": 0.1 + 0.01 * int(s)}
    d = summarize(results, samples, reps=300)
    assert set(d) == {"sfclip-clip", "clip_inherit-clip"}  # pairs whose arms exist
    gain = d["sfclip-clip"]["zeroshot/en/acc1"]
    assert gain["method"].startswith("bootstrap") and gain["n_seeds"] == 5 and gain["excludes_zero"]
    assert 0.1 < gain["ci95"][0] < gain["mean"] < gain["ci95"][1] < 0.3
    same = d["clip_inherit-clip"]["zeroshot/en/acc1"]
    assert same["mean"] == 0 and not same["excludes_zero"]
    seg = d["sfclip-clip"]["segmentation/miou"]  # no per-scene scores: the t interval
    assert seg["method"] == "Student t over seeds" and seg["mean"] == pytest.approx(0) and not seg["excludes_zero"]
    assert set(HEADLINE) >= set(d["sfclip-clip"])


def test_demo_table_reads_the_arms_intervals(tmp_path):
    import json

    from sfclip.demo.report import arms_intervals, comparison_table

    res = {"sfclip": {"zeroshot/en/acc1": 0.30, "linear_seg/miou": 0.2}, "clip": {"zeroshot/en/acc1": 0.20,
                                                                                  "linear_seg/miou": 0.2}}
    diffs = {"sfclip-clip": {"zeroshot/en/acc1": {"mean": 0.05, "ci95": [0.01, 0.09], "ci95_t": [0.02, 0.08],
                                                  "n_seeds": 5, "excludes_zero": True}}}
    path = tmp_path / "arms_intervals.json"
    path.write_text(json.dumps({"diffs": diffs}))
    intervals = arms_intervals(path)
    table = comparison_table({3000: res}, intervals)
    line = next(row for row in table.splitlines() if row.startswith("zeroshot/en/acc1"))
    assert "+0.100" in line and "+0.050 [+0.010, +0.090] *" in line
    assert "n=5 seeds" in table.splitlines()[0]
    assert arms_intervals(tmp_path / "missing.json") == {}
    plain = comparison_table({3000: res})
    assert "arms study" not in plain  # without a study the table is as before


def test_all_background_floor(tmp_path):
    from PIL import Image

    from sfclip.demo.evaluate import all_background
    from sfclip.eval.segmentation_data import SegmentationSet

    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 1  # 4 object pixels, 12 background
    mask[3, 3] = 255  # ignored
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = all_background(SegmentationSet([(tmp_path / "i.png", tmp_path / "m.png")]), 2)
    assert out["pixel_acc"] == pytest.approx(11 / 15)
    assert out["miou"] == pytest.approx((11 / 15 + 0) / 2)  # background IoU 11/15, the object's 0
