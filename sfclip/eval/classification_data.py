"""Labelled image sets for zero-shot classification and linear probes.

Layouts (`data_format`, "auto" guesses from the path):
- `folder`: `root/<class>/*.{jpg,png,...}`; classes are the sorted folder names. With `classnames`
  given, folders named like a class map to it, otherwise folders map by sorted position (ImageNet's
  WordNet-id folders); without, the folder names (underscores as spaces) are the class names.
- `csv`: a `.csv` or `.tsv` file with a header containing `filepath` and `label`; `label` is an int
  index or a class name; relative paths are relative to the file's folder.
- `wds`: local WebDataset shards (path, glob, brace pattern or list) with an image and either `cls`
  (an int) or `json` (`{"label": int or class name}`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from sfclip.eval.images import open_image
from sfclip.eval.shards import IMAGE_EXTS, Member, find_image, index_shards, read_json, read_text

__all__ = ["LabeledImages", "classification_dataset", "guess_format"]

Source = Path | Member


class LabeledImages(Dataset):
    """(image, label) pairs; `transform` maps the decoded RGB PIL image to a tensor."""

    def __init__(self, items: Sequence[tuple[Source, int]], classnames: Sequence[str],
                 transform: Callable[[Image.Image], Tensor] | None = None, indexed: bool = False) -> None:
        self.items, self.classnames, self.transform = list(items), list(classnames), transform
        self.indexed = indexed  # labels were given as class indices (not names or folders)
        n = len(self.classnames)
        bad = [(source, label) for source, label in self.items if not 0 <= label < n]
        if bad:
            source, label = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ValueError(f"label {label} of {source}{more} is outside the {n} class names (0..{n - 1}); "
                             "pass the class names of this dataset")

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> Image.Image:
        source = self.items[i][0]
        return open_image(source)

    def __getitem__(self, i: int):
        img = self.image(i)
        return (self.transform(img) if self.transform else img), self.items[i][1]

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]


def _is_index(value) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())


def _label(value, index: dict[str, int], where: str) -> int:
    if _is_index(value):
        return int(value)
    if value in index:
        return index[value]
    raise ValueError(f"{where}: label {value!r} is neither an int nor one of the class names")


def _folder(root: Path, classnames: list[str] | None) -> tuple[list[tuple[Source, int]], list[str], bool]:
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not folders:
        raise ValueError(f"{root} has no class folders")
    if classnames is None:
        classnames = [f.replace("_", " ") for f in folders]
        labels = dict(zip(folders, range(len(folders))))
    elif all(f in classnames for f in folders):
        labels = {f: classnames.index(f) for f in folders}
    elif len(folders) == len(classnames):
        labels = dict(zip(folders, range(len(folders))))
    else:
        raise ValueError(f"{root}: {len(folders)} class folders don't match {len(classnames)} class names "
                         "by name or by count")
    items = [(p, labels[f]) for f in folders for p in sorted((root / f).iterdir())
             if p.suffix.lower().lstrip(".") in IMAGE_EXTS]
    return items, classnames, False


def _csv(path: Path, classnames: list[str] | None) -> tuple[list[tuple[Source, int]], list[str], bool]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    if not rows or not {"filepath", "label"} <= set(rows[0]):
        raise ValueError(f"{path} needs a header with 'filepath' and 'label' columns")
    raw = [r["label"] for r in rows]
    if classnames is None:
        if any(_is_index(v) for v in raw):
            raise ValueError(f"{path} has integer labels: pass classnames")
        classnames = sorted(set(raw))
    index = {c: i for i, c in enumerate(classnames)}
    items = [((path.parent / r["filepath"]), _label(r["label"], index, str(path))) for r in rows]
    return items, classnames, any(_is_index(v) for v in raw)


def _wds(spec, classnames: list[str] | None) -> tuple[list[tuple[Source, int]], list[str], bool]:
    if classnames is None:
        raise ValueError("WebDataset classification needs classnames")
    index = {c: i for i, c in enumerate(classnames)}
    items, indexed = [], False
    for sample in index_shards(spec):
        if "cls" in sample:
            value = read_text(sample["cls"]).strip()
        elif "json" in sample:
            value = read_json(sample["json"])["label"]
        else:
            raise ValueError(f"sample {sample['__key__']} has neither .cls nor .json")
        indexed = indexed or _is_index(value)
        items.append((find_image(sample), _label(value, index, sample["__key__"])))
    return items, classnames, indexed


def guess_format(data) -> str:
    """'folder', 'csv' or 'wds' from the path."""
    if not isinstance(data, (str, Path)):
        return "wds"
    p = Path(data)
    if p.is_dir():
        return "folder"
    if p.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    return "wds"


def classification_dataset(data: str | Path | Sequence[str], classnames: Sequence[str] | None = None,
                           data_format: str = "auto",
                           transform: Callable[[Image.Image], Tensor] | None = None) -> LabeledImages:
    """Open a labelled image set in one of the layouts of the module docstring."""
    fmt = guess_format(data) if data_format == "auto" else data_format
    names = list(classnames) if classnames is not None else None
    if fmt == "folder":
        items, names, indexed = _folder(Path(data), names)
    elif fmt == "csv":
        items, names, indexed = _csv(Path(data), names)
    elif fmt == "wds":
        items, names, indexed = _wds(data, names)
    else:
        raise ValueError(f"data_format must be auto, folder, csv or wds; got {data_format!r}")
    if not items:
        raise ValueError(f"no images found in {data}")
    return LabeledImages(items, names, transform, indexed)
