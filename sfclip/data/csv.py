"""Image-caption pairs listed in a .csv/.tsv file: for small sets and evaluation.

Owns reading the table (image path and caption columns, relative paths resolved against the table's
folder) and `CsvSource`, which feeds the rows to the training `BatchStream` so that csv and webdataset
training share one batching, skipping, counting and resume path. (Evaluation reads tables with its own
loaders in `sfclip.eval`, which never skip a row.)
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from collections.abc import Iterator
from itertools import count
from pathlib import Path

from .stream import PASS_END, derive_seed

__all__ = ["read_table", "CsvSource", "caption_problem"]


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
