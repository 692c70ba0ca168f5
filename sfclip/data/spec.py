"""Where data lives: shard specs, local paths, dataset types and image extensions.

The leaf that training (`wds.py`, `loader.py`, `targets.py`) and evaluation (`sfclip.eval.shards`) share,
so that both read the same shard specs and the same image files. It imports nothing else from sfclip.

A shard spec is a path, a brace range (`/data/{00000..00099}.tar`), several specs joined by `::`, a glob
of local files (`/data/*.tar`), a `pipe:` command (`pipe:aws s3 cp s3://bucket/{000..999}.tar -`) or a
URL that `webdataset.gopen` opens; a list of specs is the concatenation of theirs.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from webdataset.shardlists import expand_urls

if TYPE_CHECKING:
    from .config import DataConfig

__all__ = ["IMAGE_EXTS", "DATASET_TYPES", "expand_shards", "local_path", "resolve_dataset_type"]

# File extensions read as a sample's image, in order of preference (first present wins); PIL decodes all.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")
# `DataConfig.dataset_type`: auto = csv for a .csv/.tsv path, else webdataset.
DATASET_TYPES = ("auto", "webdataset", "csv")
_GLOB_CHARS = "*?["


def expand_shards(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """A shard spec (or a list of them) -> shard urls: local paths, `file:` or `pipe:` urls, remote urls.

    Brace ranges and `::` lists are expanded as webdataset does; a local pattern with `*`, `?` or `[` is
    globbed (sorted), and kept as it is when it matches nothing, so that the caller reports it missing.
    Nothing is checked to exist.
    """
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    urls: list[str] = []
    for item in items:
        for url in expand_urls(str(item)):
            url = url.strip()
            if not url:
                continue
            path = local_path(url)
            found = sorted(glob.glob(path)) if path is not None and any(c in path for c in _GLOB_CHARS) else []
            urls.extend(found or [url])
    return urls


def local_path(url: str) -> str | None:
    """The file a shard url names (`file:` prefix removed), or None for `pipe:` commands and remote urls."""
    if url.startswith("file:"):
        return url[len("file:"):].removeprefix("//")
    if url.startswith("pipe:") or "://" in url:
        return None
    return url


def resolve_dataset_type(cfg: DataConfig) -> str:
    """`webdataset` or `csv`; `auto` picks csv for a .csv/.tsv path."""
    if cfg.dataset_type != "auto":
        return cfg.dataset_type
    return "csv" if cfg.train_data.lower().endswith((".csv", ".tsv")) else "webdataset"
