"""Image-caption pairs listed in a .csv/.tsv file: for small sets and evaluation.

Owns reading the table (image path and caption columns, relative paths resolved against the table's
folder), the map-style `CsvDataset` (with `CsvCollate`, for a `DistributedSampler`), and `CsvSource`,
which feeds the same rows to the training `BatchStream` so that csv and webdataset training share one
batching, skipping, counting and resume path.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .stream import PASS_END, SKIP_REASONS, collate, derive_seed, load_image

__all__ = ["read_table", "CsvDataset", "CsvCollate", "CsvSource", "Skipped", "caption_problem"]


def read_table(path: str | Path, img_key: str = "filepath", caption_key: str = "caption",
               separator: str = "") -> tuple[list[str], list[str]]:
    """(image paths, captions) from a table with a header row; paths made absolute.

    Text that is not valid UTF-8 is kept (as surrogates) and reported per row as `bad_text`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train_data {str(path)!r}: no such csv/tsv file")
    sep = separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header row")
        header = [h.strip() for h in header]
        for key, field in ((img_key, "csv_img_key"), (caption_key, "csv_caption_key")):
            if key not in header:
                raise ValueError(f"{path}: no column {key!r} (DataConfig.{field}); columns present: {header} "
                                 f"(separator {sep!r})")
        i_img, i_cap = header.index(img_key), header.index(caption_key)
        paths, captions = [], []
        for row in reader:
            if not row:
                continue
            paths.append(row[i_img].strip() if i_img < len(row) else "")
            captions.append(row[i_cap] if i_cap < len(row) else "")
    if not paths:
        raise ValueError(f"{path}: no rows after the header")
    root = path.parent
    paths = [str(root / p) if p and not os.path.isabs(p) else p for p in paths]
    return paths, captions


def caption_problem(caption: str) -> str | None:
    """The skip reason for a caption, or None if usable."""
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: the file had bytes that are not UTF-8
        return "bad_text"
    return None if caption.strip() else "empty_caption"


@dataclass
class Skipped:
    """What `CsvDataset` returns for a row it cannot use; `CsvCollate` drops and counts it."""

    reason: str
    key: str


class CsvDataset(Dataset):
    """Map-style: row i -> `(key, caption, image tensor(s))` or `Skipped(reason, key)`.

    `transform` is an `ImageTransform` (giving `{"image", "teacher_image"}`) or a plain eval transform
    (giving the image tensor). Batch with `DataLoader(..., collate_fn=CsvCollate(tokenizer))`; a batch
    then holds the usable rows only, so it can be smaller than the sampler's batch size. Training uses
    `CsvSource` instead (fixed batch size, exact resume).
    """

    def __init__(self, path: str | Path, transform: Callable, img_key: str = "filepath",
                 caption_key: str = "caption", separator: str = "") -> None:
        self.paths, self.captions = read_table(path, img_key, caption_key, separator)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        key, caption = str(index), self.captions[index].strip()
        reason = caption_problem(self.captions[index])
        if reason is None and not os.path.isfile(self.paths[index]):
            reason = "missing_image"
        if reason is not None:
            return Skipped(reason, key)
        try:
            img = load_image({"path": self.paths[index]})
        except Exception:  # noqa: BLE001 - any decoder failure is a bad sample, never a crash
            return Skipped("bad_image", key)
        views = self.transform(img)
        if not isinstance(views, dict):  # a plain eval transform returns the tensor only
            views = {"image": views, "teacher_image": {}}
        return key, caption, views


class CsvCollate:
    """Collate for `CsvDataset`: drops `Skipped` rows, counts them in `batch["skipped"]`, tokenizes."""

    def __init__(self, tokenizer: Callable) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list) -> dict:
        counts = Counter(item.reason for item in items if isinstance(item, Skipped))
        good = [item for item in items if not isinstance(item, Skipped)]
        if not good:  # every row of this batch was unusable: only the counts travel
            return {"__key__": [], "skipped": {reason: counts.get(reason, 0) for reason in SKIP_REASONS}}
        keys, captions, views = zip(*good)
        images = {"image": torch.stack([v["image"] for v in views]),  # (B, 3, S, S)
                  "teacher_image": {s: torch.stack([v["teacher_image"][s] for v in views])  # (B, 3, s, s)
                                    for s in views[0]["teacher_image"]}}
        return collate(list(keys), list(captions), images, self.tokenizer, counts)


class CsvSource:
    """Endless raw samples of one slot for an epoch: pass `p` permutes the rows with (seed, epoch, p)
    and the slot takes `rows[slot::num_slots]`; unusable rows are counted before decoding."""

    def __init__(self, paths: list[str], captions: list[str], seed: int = 0) -> None:
        self.paths, self.captions = paths, captions
        self.seed = seed

    def samples(self, epoch: int, slot: int, num_slots: int, counts: Counter) -> Iterator[dict | None]:
        streak = 0
        for p in count():
            order = list(range(len(self.paths)))
            random.Random(derive_seed(self.seed, epoch, p, "rows")).shuffle(order)
            for i in order[slot::num_slots]:
                reason = caption_problem(self.captions[i])
                if reason is None and not os.path.isfile(self.paths[i]):
                    reason = "missing_image"
                if reason is not None:
                    counts[reason] += 1
                    streak += 1
                    if streak > len(self.paths):
                        raise RuntimeError(f"no usable row in the csv; counts: {dict(counts)}")
                    continue
                streak = 0
                yield {"__key__": str(i), "caption": self.captions[i].strip(), "path": self.paths[i]}
            yield PASS_END
