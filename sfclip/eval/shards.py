"""Random access to WebDataset shards for evaluation.

Evaluation sets are finite and read once in order, so instead of streaming we index the tar members
(name, byte offset, size) and read samples back by position. That gives map-style datasets for every
format: the same DataLoader code, workers without shard-splitting rules, and random access for pictures.
Shard specs, image extensions and the shard opener are training's (`sfclip.data.spec`, `sfclip.data.wds`):
a `pipe:` command or url is read once into a local temporary file (removed at exit) and indexed there.
Only uncompressed tars are indexed; samples are grouped WebDataset-style by the member name up to
the first dot of its basename (`dir/000123.jpg` and `dir/000123.cls` form sample `dir/000123`).
Unlike training, a missing shard is an error: an evaluation never skips data.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sfclip.data.spec import IMAGE_EXTS, local_path
from sfclip.data.spec import expand_shards as expand_spec
from sfclip.data.wds import open_shard

__all__ = ["Member", "expand_shards", "index_shards", "read_member", "read_text", "read_json", "find_image",
           "IMAGE_EXTS"]

_spool_dir: str | None = None


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
    """A shard spec (`sfclip.data.spec`: path, glob, brace range, `::` list, `pipe:` command, url) or a list of
    them -> the shard urls; a local shard that does not exist is a `FileNotFoundError`."""
    urls = expand_spec(spec)
    missing = [url for url in urls if (path := local_path(url)) is not None and not Path(path).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of {spec!r})" if len(missing) > 1 else ""
        raise FileNotFoundError(f"no such file or folder: {missing[0]}{more}")
    if not urls:
        raise FileNotFoundError(f"no shard files match {spec!r}")
    return urls


def _local_file(url: str) -> str:
    """The shard as a local file: its own path, or a temporary copy of what a `pipe:` or url stream gives."""
    path = local_path(url)
    if path is not None:
        return path
    global _spool_dir
    if _spool_dir is None:
        _spool_dir = tempfile.mkdtemp(prefix="sfclip-eval-shards-")
        atexit.register(shutil.rmtree, _spool_dir, ignore_errors=True)
    fd, copy = tempfile.mkstemp(suffix=".tar", dir=_spool_dir)
    stream = open_shard(url)
    try:
        with open(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
    finally:
        stream.close()  # a pipe: command that failed raises here
    return copy


def index_shards(spec: str | Path | Sequence[str | Path]) -> list[dict[str, Member]]:
    """Samples in shard order, each a dict extension -> Member (`{"jpg": ..., "cls": ...}`)."""
    samples: list[dict[str, Member]] = []
    for url in expand_shards(spec):
        shard = _local_file(url)
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
