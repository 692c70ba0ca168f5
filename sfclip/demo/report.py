"""The demo's outputs: the side-by-side table, `results.json` and the loss-curve PNGs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sfclip.demo import vocab
from sfclip.demo.evaluate import METRICS

__all__ = ["REFERENCES", "arms_intervals", "comparison_table", "write_results", "plot_losses", "plot_languages",
           "read_metrics", "metric_order"]


def metric_order() -> list[str]:
    """Rows of the table: zero-shot per language first, then the rest."""
    rows = []
    for task in ("zeroshot", "zeroshot_colour"):
        rows += [*(f"{task}/{lang}/acc1" for lang in vocab.LANGUAGES), f"{task}/mean_other/acc1"]
    return [*rows, *METRICS, "train/seconds"]


# Rows that describe the budget and the teacher rather than either model (`sfclip demo --references`).
REFERENCES = ("reference/supervised/acc1", "reference/teacher_cls/acc1", "reference/teacher_patch/acc1")


def _cell(v: float | None, seconds: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.0f}" if seconds else f"{v:.3f}"


def arms_intervals(path: Path | None = None) -> dict[str, dict]:
    """The committed arms study's `sfclip-clip` differences by metric ({} where the file is not there): what
    one seed's difference is read against (`benchmarks/demo_arms.py`, docs/demo/arms.json)."""
    path = path or Path(__file__).resolve().parent / "arms_intervals.json"
    try:
        return json.loads(path.read_text())["diffs"].get("sfclip-clip", {})
    except (OSError, ValueError, KeyError):
        return {}


def _interval(row: dict | None) -> str:
    if not row or None in row["ci95"]:
        return ""
    lo, hi = row["ci95"]
    return f"{row['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if row['excludes_zero'] else ''}"


def comparison_table(budgets: dict[int, dict[str, dict[str, float]]], intervals: dict | None = None) -> str:
    """Metric rows x (sfclip, clip, difference) per budget, as fixed-width text; with `intervals` (the arms
    study's sfclip-clip differences, `arms_intervals()`), a last column: its mean difference over seeds and
    95% interval (* where the bootstrap and t intervals both exclude 0)."""
    intervals = intervals or {}
    head = ["metric"]
    for pairs in budgets:
        head += [f"sfclip@{pairs}", f"clip@{pairs}", "diff"]
    if intervals:
        head.append(f"arms study diff, 95% CI (n={max(r['n_seeds'] for r in intervals.values())} seeds)")
    rows = []
    for key in metric_order():
        row = [key]
        for res in budgets.values():
            a, b = res["sfclip"].get(key), res["clip"].get(key)
            secs = key == "train/seconds"
            row += [_cell(a, secs), _cell(b, secs),
                    "" if a is None or b is None else (f"{a - b:+.0f}" if secs else f"{a - b:+.3f}")]
        if intervals:
            row.append(_interval(intervals.get(key)))
        rows.append(row)
    main = next(iter(budgets.values()))
    for key in REFERENCES:  # one value for the whole comparison, shown once
        if key in main.get("reference", {}):
            rows.append([key, _cell(main["reference"][key]), "", ""] + [""] * (len(head) - 4))
    if intervals:
        rows.append(["(the arms study: benchmarks/demo_arms.py, docs/demo.md)"] + [""] * (len(head) - 1))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(path: Path, budgets: dict[int, dict[str, dict[str, float]]], extra: dict) -> Path:
    """`results.json`: `sfclip` / `clip` at the main (first) budget at the top, every budget under `budgets`."""
    main = next(iter(budgets))
    data = {"sfclip": budgets[main]["sfclip"], "clip": budgets[main]["clip"],
            **({"reference": budgets[main]["reference"]} if "reference" in budgets[main] else {}), "main_budget": main,
            "budgets": {str(k): v for k, v in budgets.items()}, **extra}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_metrics(run_dir: Path) -> list[dict]:
    """The training log of a run (`metrics.jsonl`), loss rows only."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r]


REF_STYLES = {"dataset_mean": ":", "position_mean": "--", "sample_mean": "-."}


def plot_losses(runs: dict[str, Path], path: Path, title: str) -> Path:
    """One PNG: the contrastive loss of every run and the distillation losses of those that have them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    ax_c, ax_d = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, run_dir in runs.items():
        rows = read_metrics(run_dir)
        steps = [r["step"] for r in rows]
        ax_c.plot(steps, [r["contrastive_loss"] for r in rows], label=name)
        distill = {k for r in rows for k in r if k.endswith("_loss") and k not in ("loss", "contrastive_loss")}
        for key in sorted(distill):
            teacher = key.removesuffix("_loss")
            line, = ax_d.plot(steps, [r.get(key, float("nan")) for r in rows], label=f"{name}: {teacher}")
            # The objective's reference levels for this teacher, in the same colour: a loss that stays on
            # the per-position line has learned a spatial prior only (sfclip.objective, log_references).
            for ref, style in REF_STYLES.items():
                values = [r.get(f"{teacher}_ref/{ref}", float("nan")) for r in rows]
                if any(not math.isnan(v) for v in values):
                    ax_d.plot(steps, values, linestyle=style, linewidth=1, color=line.get_color(), alpha=0.8,
                              label=f"{teacher}: {ref.replace('_', ' ')}")
    ax_c.set(title="contrastive loss", xlabel="step")
    ax_d.set(title="distillation losses and their reference levels", xlabel="step")
    for ax in (ax_c, ax_d):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _num_classes() -> int:
    """How many classes the zero-shot task chose among: the demo's kept classes (six), not the glyph set's ten."""
    from sfclip.demo.settings import SCENES

    return len(SCENES.get("classes") or vocab.CLASSNAMES["en"])


def plot_languages(budgets: dict[int, dict[str, dict[str, float]]], path: Path) -> Path:
    """One PNG: zero-shot accuracy per language, SF-CLIP beside CLIP, one panel per task and budget."""
    from matplotlib.figure import Figure

    tasks = [("zeroshot_colour", "object colour"), ("zeroshot", "object class")]
    fig = Figure(figsize=(5.5 * len(budgets), 3.4 * len(tasks)), dpi=100)
    axes = fig.subplots(len(tasks), len(budgets), squeeze=False)
    x = list(range(len(vocab.LANGUAGES)))
    for row, (task, label) in enumerate(tasks):
        for col, (pairs, res) in enumerate(budgets.items()):
            chance = 1 / (len(vocab.COLOURS) if task == "zeroshot_colour" else _num_classes())
            ax = axes[row][col]
            for shift, kind in ((-0.2, "sfclip"), (0.2, "clip")):
                ax.bar([i + shift for i in x], [res[kind].get(f"{task}/{lang}/acc1", float("nan"))
                                                 for lang in vocab.LANGUAGES], width=0.4, label=kind)
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
            ax.set_xticks(x, list(vocab.LANGUAGES))
            ax.set(title=f"{label}, {pairs} training pairs (English only)", ylabel="zero-shot top-1", ylim=(0, 1))
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
