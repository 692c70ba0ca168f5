"""The demo's outputs: the side-by-side table, `results.json` and the loss-curve PNGs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sfclip.demo import vocab
from sfclip.demo.evaluate import METRICS

__all__ = ["comparison_table", "write_results", "plot_losses", "read_metrics", "metric_order"]


def metric_order() -> list[str]:
    """Rows of the table: zero-shot per language first, then the rest."""
    langs = [f"zeroshot/{lang}/acc1" for lang in vocab.LANGUAGES]
    return [*langs, "zeroshot/mean_other/acc1", *METRICS, "train/seconds"]


def _cell(v: float | None, seconds: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.0f}" if seconds else f"{v:.3f}"


def comparison_table(budgets: dict[int, dict[str, dict[str, float]]]) -> str:
    """Metric rows x (sfclip, clip, difference) per budget, as fixed-width text."""
    head = ["metric"]
    for pairs in budgets:
        head += [f"sfclip@{pairs}", f"clip@{pairs}", "diff"]
    rows = []
    for key in metric_order():
        row = [key]
        for res in budgets.values():
            a, b = res["sfclip"].get(key), res["clip"].get(key)
            secs = key == "train/seconds"
            row += [_cell(a, secs), _cell(b, secs),
                    "" if a is None or b is None else (f"{a - b:+.0f}" if secs else f"{a - b:+.3f}")]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(path: Path, budgets: dict[int, dict[str, dict[str, float]]], extra: dict) -> Path:
    """`results.json`: `sfclip` / `clip` at the main (first) budget at the top, every budget under `budgets`."""
    main = next(iter(budgets))
    data = {"sfclip": budgets[main]["sfclip"], "clip": budgets[main]["clip"], "main_budget": main,
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


def plot_losses(runs: dict[str, Path], path: Path, title: str) -> Path:
    """One PNG: the contrastive loss of every run and the distillation losses of those that have them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    ax_c, ax_d = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, run_dir in runs.items():
        rows = read_metrics(run_dir)
        steps = [r["step"] for r in rows]
        ax_c.plot(steps, [r["contrastive_loss"] for r in rows], label=name)
        for key in sorted({k for r in rows for k in r if k.endswith("_loss") and k not in ("loss", "contrastive_loss")}):
            ax_d.plot(steps, [r.get(key, float("nan")) for r in rows], label=f"{name}: {key.removesuffix('_loss')}")
    ax_c.set(title="contrastive loss", xlabel="step")
    ax_d.set(title="distillation losses", xlabel="step")
    for ax in (ax_c, ax_d):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
