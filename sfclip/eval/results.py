"""Evaluation results on disk and on screen.

One result is CLIP_benchmark's JSON record, so existing aggregation scripts read ours unchanged:
`{"dataset": ..., "model": ..., "pretrained": ..., "task": ..., "metrics": {...}, "language": ...}`.
`clip_benchmark_record` is what `sfclip eval` writes: CLIP_benchmark's task name and, besides sfclip's own
metric names, CLIP_benchmark's names of the same numbers, so that `clip_benchmark build` puts both tools'
results of one set into the same columns. `write_result` names the file as `clip_benchmark eval` does,
`<dataset>_<pretrained>_<model>_<language>_<task>.json` (without `pretrained` when a record has none), when
given a folder; `format_table` renders any number of records as a fixed-width text table.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["BUILD_FIELDS", "CLIP_BENCHMARK_TASKS", "result_record", "clip_benchmark_metrics",
           "clip_benchmark_record", "write_result", "check_writable", "read_results", "format_table",
           "print_table"]

# What `clip_benchmark build` reads of a record: `metrics` (a dict, its items become columns), `model` and
# `pretrained` (strings, joined into `model_fullname`); every other top-level key becomes a column as is.
BUILD_FIELDS = {"dataset": str, "model": str, "pretrained": str, "task": str, "metrics": dict, "language": str}
# sfclip's task names -> CLIP_benchmark's, where they differ.
CLIP_BENCHMARK_TASKS = {"retrieval": "zeroshot_retrieval"}


def result_record(dataset: str, model: str, task: str, metrics: Mapping[str, float], language: str = "en",
                  **extra) -> dict:
    """A CLIP_benchmark-style record; metric values become plain floats."""
    return {"dataset": dataset, "model": model, "task": task,
            "metrics": {k: float(v) for k, v in metrics.items()}, "language": language, **extra}


def clip_benchmark_metrics(task: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """`metrics` plus CLIP_benchmark's names for the same numbers. Retrieval: `i2t_r{k}` (an image query finds
    one of its captions in the top k) is its `text_retrieval_recall@{k}`, `t2i_r{k}` (a caption query finds
    its image) its `image_retrieval_recall@{k}`. Classification already uses its names (acc1, acc5,
    mean_per_class_recall)."""
    out = {k: float(v) for k, v in metrics.items()}
    if task == "retrieval":
        for key, value in metrics.items():
            for ours, theirs in (("i2t_r", "text"), ("t2i_r", "image")):
                if key.startswith(ours) and key[len(ours):].isdigit():
                    out[f"{theirs}_retrieval_recall@{key[len(ours):]}"] = float(value)
    return out


def clip_benchmark_record(dataset: str, model: str, pretrained: str, task: str, metrics: Mapping[str, float],
                          language: str = "en") -> dict:
    """The record `sfclip eval` writes: `model` the student's architecture, `pretrained` the checkpoint (a
    path or `hf-hub:` id), CLIP_benchmark's task name and metric names added to sfclip's."""
    return result_record(dataset, model, CLIP_BENCHMARK_TASKS.get(task, task), clip_benchmark_metrics(task, metrics),
                         language, pretrained=pretrained)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def write_result(path: str | Path, record: Mapping) -> Path:
    """Write one record as JSON to `path`, or into `path/` under the CLIP_benchmark-style name."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        keys = ("dataset", "pretrained", "model", "language", "task") if "pretrained" in record else \
            ("dataset", "model", "language", "task")
        name = "_".join(_slug(str(record.get(k, ""))) for k in keys)
        path = path / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    return path


def check_writable(path: str | Path) -> None:
    """Raise OSError naming `path` when `write_result(path, ...)` could not write there; creates nothing.

    Run it before an evaluation, so a bad `--output` is found in a second, not after an hour. The test is a
    real one (a temporary file in the nearest existing folder, or an append-open of an existing file),
    because permission bits say little to root or on read-only and special file systems.
    """
    path = Path(path)
    target_dir = path if path.is_dir() or path.suffix != ".json" else path.parent
    if path.suffix == ".json" and path.is_file():
        try:
            with open(path, "a", encoding="utf-8"):
                return
        except OSError as e:
            raise OSError(f"cannot write {path} ({e.strerror or e})") from None
    folder = target_dir
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".sfclip-write-test-")
    except OSError as e:
        raise OSError(f"cannot write {path}: {folder} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def read_results(paths: str | Path | Iterable[str | Path]) -> list[dict]:
    """Records from JSON files or folders of them (sorted by name)."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in map(Path, items):
        files.extend(sorted(item.glob("*.json")) if item.is_dir() else [item])
    return [json.loads(f.read_text("utf-8")) for f in files]


def format_table(records: Iterable[Mapping], per_class: bool = False, digits: int = 4) -> str:
    """Text table, one row per record: dataset, task, language, model (and pretrained, where a record has
    it), then the union of metric names (per-class `iou/<class>` columns only with `per_class=True`)."""
    records = list(records)
    keys: list[str] = []
    for r in records:
        for k in r.get("metrics", {}):
            if k not in keys and (per_class or "/" not in k):
                keys.append(k)
    text = ["dataset", "task", "language", "model"] + (["pretrained"] if any("pretrained" in r for r in records)
                                                       else [])
    header = [*text, *keys]

    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}f}"
        return "" if value is None else str(value)

    rows = [[*(cell(r.get(k)) for k in text), *(cell(r.get("metrics", {}).get(k)) for k in keys)]
            for r in records]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i >= len(text) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    return "\n".join(lines)


def print_table(records: Iterable[Mapping], per_class: bool = False) -> None:
    """Print `format_table(records)`."""
    print(format_table(records, per_class))
