"""The arms of the demo's ablation study: one `RunConfig` per ingredient between CLIP and the demo's SF-CLIP.

Every arm trains the demo's student on the demo's data, order, view, steps, optimizer and seed; each changes
only what its name says against the arm before it:

- `clip`: the baseline, the text tower with its own trainable 250k-row token table, no teachers;
- `clip_inherit`: the text tower inherits multilingual-E5's frozen word embeddings (with the trainable
  projection and LayerNorm SF-CLIP puts over them), no distillation;
- `sfclip_paper`: + masked per-patch distillation from DINOv2 and per-token distillation from E5 on the
  first half of every batch: the method as the paper's abstract describes it;
- `sfclip`: + DINOv2's class token distilled into the student's (the summary term, RADIO's loss: **ours**,
  not the paper's), the demo's default.

Precision variants (issue 18, one seed): `sfclip_bf16_teachers` (targets computed by bf16 teachers),
`sfclip_bf16_train` and `clip_bf16_train` (the student trained under bf16 autocast). The study itself pins
fp32 for teachers and training, so that its numbers do not depend on the CPU that made them. The pair
`clip_meanpool` / `sfclip_meanpool` trains the patch tokens into the joint space (`vision.pool: mean`), to
ask whether per-patch distillation helps dense zero-shot once the patch tokens are in that space.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sfclip.config import RunConfig
from sfclip.demo.settings import DemoSettings, run_config

__all__ = ["ARMS", "PAPER_ARMS", "VARIANTS", "arm_config", "arm_settings"]

ARMS = {
    "clip": "CLIP: own trainable token table, no teachers",
    "clip_inherit": "CLIP + E5's inherited frozen table (projection, LayerNorm), no distillation",
    "sfclip_paper": "inherited table + masked patch (DINOv2) and token (E5) distillation: the paper's method",
    "sfclip": "sfclip_paper + DINOv2 class-token summary term (ours): the demo's default",
}
PAPER_ARMS = ("clip", "clip_inherit", "sfclip_paper")  # what the abstract describes; `sfclip` adds ours
VARIANTS = {
    "sfclip_bf16_teachers": "sfclip with targets from bf16 teachers",
    "sfclip_bf16_train": "sfclip trained under bf16 autocast",
    "clip_bf16_train": "clip trained under bf16 autocast",
    "clip_meanpool": "clip with the image embedding pooled from the patch tokens (vision.pool: mean)",
    "sfclip_meanpool": "sfclip with the image embedding pooled from the patch tokens (vision.pool: mean)",
}


def arm_settings(s: DemoSettings, arm: str) -> DemoSettings:
    """The demo settings of `arm`: fp32 teachers and training unless the arm is a precision variant."""
    if arm not in ARMS and arm not in VARIANTS:
        raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}; variants: {', '.join(VARIANTS)}")
    teacher = "bfloat16" if arm == "sfclip_bf16_teachers" else "float32"
    precision = "bf16" if arm.endswith("_bf16_train") else "fp32"
    return dataclasses.replace(s, teacher_dtype=teacher, precision=precision,
                               summary_weight=s.summary_weight if arm != "sfclip_paper" else 0.0)


def arm_config(s: DemoSettings, arm: str, pairs: int, shards: Path, runs: Path, seed: int, targets: Path,
               tokenizer: Path) -> RunConfig:
    """The `RunConfig` of `arm` (settings from `arm_settings`) on the first `pairs` scenes of `shards`."""
    s = arm_settings(s, arm)
    kind = "clip" if arm in ("clip", "clip_bf16_train", "clip_meanpool") else "sfclip"
    if arm.endswith("_meanpool"):
        s = dataclasses.replace(s, overrides={**s.overrides, "vision.pool": "mean"})
    cfg = run_config(s, kind, pairs, shards, runs, seed, targets=targets, e5_folder=tokenizer)
    if arm == "clip_inherit":
        text = [t for t in cfg.objective.teachers if t.kind == "text"]
        cfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, distill_fraction=0.0,
                                                                     teachers=text),
                                  data=dataclasses.replace(cfg.data, targets=""))
    return dataclasses.replace(cfg, name=f"{arm}_s{seed}")


# -- the study's summary: arms.json and arms.png ---------------------------------------------------------------
# Headline metrics, each with the per-scene scores a bootstrap resamples (None: only the per-seed value exists,
# and the interval is Student-t over seeds). `mean_other` averages the seven non-English languages per scene.
HEADLINE = {
    "zeroshot/en/acc1": "zeroshot/en",
    "zeroshot/mean_other/acc1": "zeroshot/mean_other",
    "zeroshot_colour/mean_other/acc1": "zeroshot_colour/mean_other",
    "linear_probe/acc1": "linear_probe",
    "linear_probe_patch/acc1": "linear_probe_patch",
    "retrieval/i2t_r1": None,
    "retrieval/t2i_r1": None,
    "retrieval/i2t_r1_text": None,
    "retrieval/t2i_r1_text": None,
    "segmentation/miou": None,
    "segmentation/maskclip/miou": None,
    "segmentation/clearclip/miou": None,
    "linear_seg/miou": None,
}
DIFFS = (("sfclip", "clip"), ("sfclip_paper", "clip"), ("clip_inherit", "clip"), ("sfclip", "sfclip_paper"),
         ("sfclip_paper", "clip_inherit"),
         # the variants against their base arm (issue 18: the same answers in bf16)
         ("sfclip_bf16_teachers", "sfclip"), ("sfclip_bf16_train", "sfclip"), ("clip_bf16_train", "clip"),
         ("clip_meanpool", "clip"), ("sfclip_meanpool", "sfclip"), ("sfclip_meanpool", "clip_meanpool"))


def with_means(per_sample: dict) -> dict:
    """`per_sample` plus `<task>/mean_other`: the per-scene mean over the seven non-English languages."""
    from sfclip.demo import vocab

    out = dict(per_sample)
    for task in ("zeroshot", "zeroshot_colour"):
        langs = [per_sample.get(f"{task}/{lang}") for lang in vocab.LANGUAGES[1:]]
        if all(x is not None for x in langs):
            out[f"{task}/mean_other"] = sum(x.astype(float) for x in langs) / len(langs)
    return out


def summarize(results: dict, samples: dict, reps: int = 2000, prefix: str = "") -> dict:
    """arms.json's `diffs`: for each pair in `DIFFS` and each headline metric (on the test sets), the mean
    paired difference over shared seeds with its 95% interval.

    results: {arm: {seed: {metric: value}}}; samples: {arm: {seed: {per-sample key: (N,) array}}}. `ci95` is the
    two-level bootstrap (seeds, then test scenes) where per-scene scores exist, else the t interval; `ci95_t` is
    always the t interval over per-seed differences; `excludes_zero` is true only where both exclude 0.
    `prefix` "val/" summarizes the validation sets instead (what choices are made on).
    """
    import numpy as np

    from sfclip.eval.stats import paired_bootstrap, t_interval

    diffs: dict = {}
    for a, b in DIFFS:
        if a not in results or b not in results:
            continue
        seeds = sorted(set(results[a]) & set(results[b]), key=int)
        if not seeds:
            continue
        out = {}
        for name, key in HEADLINE.items():
            metric, key = prefix + name, None if key is None else prefix + key
            per_seed = [results[a][s][metric] - results[b][s][metric] for s in seeds
                        if metric in results[a][s] and metric in results[b][s]]
            if not per_seed:
                continue
            mean, lo_t, hi_t = t_interval(per_seed)
            row = {"mean": mean, "n_seeds": len(per_seed), "per_seed": per_seed, "ci95_t": [lo_t, hi_t]}
            have = key is not None and all(key in samples.get(x, {}).get(s, {}) for x in (a, b) for s in seeds)
            if have:
                _, lo, hi = paired_bootstrap({s: np.asarray(samples[a][s][key], float) for s in seeds},
                                             {s: np.asarray(samples[b][s][key], float) for s in seeds}, reps=reps)
                row.update(ci95=[lo, hi], method="bootstrap over seeds and test scenes")
            else:
                row.update(ci95=[lo_t, hi_t], method="Student t over seeds")
            row["excludes_zero"] = bool(min(row["ci95"][0], lo_t) > 0 or max(row["ci95"][1], hi_t) < 0)
            out[name] = row
        diffs[f"{a}-{b}"] = out
    return diffs


def _floor(metric: str, results: dict) -> tuple[str, float] | None:
    """The line a metric is read against: chance for zero-shot, the all-background labelling for zero-shot
    segmentation (the mean over the study's test sets)."""
    from sfclip.demo.settings import SCENES

    if metric.startswith("zeroshot_colour/"):
        return "chance", 1 / 8
    if metric.startswith("zeroshot/"):
        return "chance", 1 / len(SCENES["classes"])
    if metric.startswith("segmentation/") and metric.endswith("/miou"):
        vals = [m["segmentation/all_background/miou"] for per in results.values() for m in per.values()
                if "segmentation/all_background/miou" in m]
        return ("all background", sum(vals) / len(vals)) if vals else None
    return None


def plot_arms(results: dict, samples: dict, path: Path, reps: int = 1000) -> Path:
    """One PNG: per headline metric, each arm's mean over seeds with its 95% interval (bootstrap where
    per-scene scores exist, else t), seeds as dots."""
    import numpy as np
    from matplotlib.figure import Figure

    from sfclip.eval.stats import mean_interval, t_interval

    metrics = list(HEADLINE)
    arms = [a for a in (*ARMS, *VARIANTS) if a in results]
    cols = 3
    rows = (len(metrics) + cols - 1) // cols
    fig = Figure(figsize=(4.6 * cols, 3.0 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = {"clip": "#888888", "clip_inherit": "#4c9be8", "sfclip_paper": "#2ca02c", "sfclip": "#d62728"}
    for ax, metric in zip(axes, metrics):
        key = HEADLINE[metric]
        for i, arm in enumerate(arms):
            seeds = sorted(results[arm], key=int)
            vals = [results[arm][s][metric] for s in seeds if metric in results[arm][s]]
            if not vals:
                continue
            if key is not None and all(key in samples.get(arm, {}).get(s, {}) for s in seeds):
                m, lo, hi = mean_interval({s: np.asarray(samples[arm][s][key], float) for s in seeds}, reps=reps)
            else:
                m, lo, hi = t_interval(vals)
            lo, hi = (m, m) if not np.isfinite(lo) else (lo, hi)
            c = colours.get(arm, "#9467bd")
            ax.errorbar([i], [m], yerr=[[m - lo], [hi - m]], fmt="o", color=c, capsize=4, markersize=6)
            ax.scatter([i + 0.18] * len(vals), vals, s=8, color=c, alpha=0.5)
        floor = _floor(metric, results)
        if floor is not None:
            ax.axhline(floor[1], color="black", linestyle="--", linewidth=0.8, label=floor[0])
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(range(len(arms)), [a.replace("_", "\n", 1) for a in arms], fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle("demo arms: mean over seeds, 95% interval (dots: seeds); sfclip adds our summary term; "
                 "bf16 variants: seed 0 only",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
