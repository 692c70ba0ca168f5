"""Evaluation results on disk and on screen.

One result is CLIP_benchmark's JSON record, so existing aggregation scripts read ours unchanged:
`{"dataset": ..., "model": ..., "task": ..., "metrics": {...}, "language": ...}` (extra keys such as
`pretrained` are allowed). `write_result` names the file `<dataset>_<model>_<language>_<task>.json` when
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

__all__ = ["result_record", "write_result", "check_writable", "read_results", "format_table", "print_table"]


def result_record(dataset: str, model: str, task: str, metrics: Mapping[str, float], language: str = "en",
                  **extra) -> dict:
    """A CLIP_benchmark-style record; metric values become plain floats."""
    return {"dataset": dataset, "model": model, "task": task,
            "metrics": {k: float(v) for k, v in metrics.items()}, "language": language, **extra}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def write_result(path: str | Path, record: Mapping) -> Path:
    """Write one record as JSON to `path`, or into `path/` under the CLIP_benchmark-style name."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        name = "_".join(_slug(str(record.get(k, ""))) for k in ("dataset", "model", "language", "task"))
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
    """Text table, one row per record: dataset, task, language, model, then the union of metric names
    (per-class `iou/<class>` columns only with `per_class=True`)."""
    records = list(records)
    keys: list[str] = []
    for r in records:
        for k in r.get("metrics", {}):
            if k not in keys and (per_class or "/" not in k):
                keys.append(k)
    header = ["dataset", "task", "language", "model", *keys]

    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}f}"
        return "" if value is None else str(value)

    rows = [[cell(r.get("dataset")), cell(r.get("task")), cell(r.get("language")), cell(r.get("model")),
             *(cell(r.get("metrics", {}).get(k)) for k in keys)] for r in records]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    return "\n".join(lines)


def print_table(records: Iterable[Mapping], per_class: bool = False) -> None:
    """Print `format_table(records)`."""
    print(format_table(records, per_class))
