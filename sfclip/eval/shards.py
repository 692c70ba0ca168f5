"""Random access to local WebDataset shards for evaluation.

Evaluation sets are finite and read once in order, so instead of streaming we index the tar members
(name, byte offset, size) and read samples back by position. That gives map-style datasets for every
format: the same DataLoader code, workers without shard-splitting rules, and random access for pictures.
Only uncompressed local tars are indexed; samples are grouped WebDataset-style by the member name up to
the first dot of its basename (`dir/000123.jpg` and `dir/000123.cls` form sample `dir/000123`).
"""

from __future__ import annotations

import glob
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Member", "expand_shards", "index_shards", "read_member", "read_text", "read_json", "find_image",
           "IMAGE_EXTS"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")


@dataclass(frozen=True)
class Member:
    """Where one file of a sample lives inside a shard."""

    shard: str
    offset: int
    size: int
    name: str = ""  # the member's name inside the tar, for messages

    def __str__(self) -> str:
        return f"{self.shard}:{self.name or self.offset}"


def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """A shard path, glob, brace pattern (`shard-{000..009}.tar`) or list of them -> existing paths."""
    from braceexpand import braceexpand

    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    paths: list[str] = []
    for item in items:
        for pattern in braceexpand(str(item)):
            found = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            paths.extend(found)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of {spec!r})" if len(missing) > 1 else ""
        raise FileNotFoundError(f"no such file or folder: {missing[0]}{more}")
    if not paths:
        raise FileNotFoundError(f"no shard files match {spec!r}")
    return paths


def index_shards(spec: str | Path | Sequence[str | Path]) -> list[dict[str, Member]]:
    """Samples in shard order, each a dict extension -> Member (`{"jpg": ..., "cls": ...}`)."""
    samples: list[dict[str, Member]] = []
    for shard in expand_shards(spec):
        current_key, current = None, {}
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                directory, _, base = info.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot or stem.startswith("_"):  # no extension, or WebDataset metadata (e.g. __index__)
                    continue
                key = f"{directory}/{stem}" if directory else stem
                if key != current_key:
                    if current:
                        samples.append(current)
                    current_key, current = key, {"__key__": key}  # type: ignore[dict-item]
                current[ext.lower()] = Member(shard, info.offset_data, info.size, info.name)
        if current:
            samples.append(current)
    return samples


def read_member(member: Member) -> bytes:
    """The bytes of one tar member."""
    with open(member.shard, "rb") as f:
        f.seek(member.offset)
        return f.read(member.size)


def read_text(member: Member) -> str:
    """A text member decoded as UTF-8."""
    return read_member(member).decode("utf-8")


def read_json(member: Member):
    """A JSON member parsed."""
    return json.loads(read_member(member))


def find_image(sample: dict) -> Member:
    """The sample's image member, whichever image extension it uses."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    raise KeyError(f"sample {sample.get('__key__')} has no image (looked for {IMAGE_EXTS})")
