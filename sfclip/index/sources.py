"""What `sfclip embed` reads: an image folder, a CSV/TSV or WebDataset shards (images), or a caption file.

Every source is a finite, ordered stream of *entries*; an entry is a usable item or a skip with its
reason, so that an entry's position in the stream is stable across runs and a resumed run can drop the
first `n` entries without reading their images. The readers are the training pipeline's
(`sfclip.data.csv.read_table`, `sfclip.data.wds.read_shard`, `decode_image`), and skips carry the
training pipeline's reasons (`missing_image`, `bad_image`, `bad_shard`, `empty_caption`, `bad_text`).

An image index needs no caption: a sample is skipped for its image only (a missing or empty caption is
kept as ""), unlike training, which also skips samples without a caption. A text index skips empty and
undecodable captions, as training does.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Entry", "ImageSource", "TextSource", "open_image_source", "open_text_source", "FOLDER_IMAGE_EXTS"]

# A folder's files with these suffixes are images; anything else beside them (captions, JSON) is ignored.
FOLDER_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".gif", ".tif", ".tiff")
_TEXT_EXTS = (".txt",)
_TABLE_EXTS = (".csv", ".tsv")


@dataclass
class Entry:
    """One position of a source: a usable item (`skip` is None) or a skipped one (`skip` is the reason).

    `row` is what the index stores about the item (key, path or shard + member, caption); `data` is the
    image bytes when the reader already holds them (shards), else None (the image is read from `path`).
    """

    row: dict = field(default_factory=dict)
    data: bytes | None = None
    skip: str | None = None


def _caption_problem(caption: str) -> str | None:
    from ..data.csv import caption_problem

    return caption_problem(caption)


class ImageSource:
    """Images of a folder (recursive, sorted), a CSV/TSV (the training columns) or WebDataset shards."""

    def __init__(self, spec: str, kind: str, *, img_key: str = "filepath", caption_key: str = "caption",
                 separator: str = "") -> None:
        self.spec, self.kind = spec, kind
        self.img_key, self.caption_key, self.separator = img_key, caption_key, separator
        self._files: list[Path] | None = None
        self._table: tuple[list[str], list[str]] | None = None
        self._urls: list[str] | None = None
        if kind == "folder":
            root = Path(spec)
            self._files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FOLDER_IMAGE_EXTS)
            if not self._files:
                raise ValueError(f"{spec}: no image files in this folder (looked for {', '.join(FOLDER_IMAGE_EXTS)})")
        elif kind == "csv":
            from ..data.csv import read_table

            self._table = read_table(spec, img_key, caption_key, separator)
        elif kind == "webdataset":
            from ..data.wds import check_shards, expand_shards

            self._urls = expand_shards(spec)
            check_shards(self._urls, spec)
        else:
            raise ValueError(f"unknown image source kind {kind!r}")

    def total(self) -> int | None:
        """The number of entries, when known without reading the data (for the progress bar)."""
        if self._files is not None:
            return len(self._files)
        if self._table is not None:
            return len(self._table[0])
        from ..data.wds import dataset_size

        try:
            return dataset_size(self._urls)
        except (OSError, ValueError, KeyError):
            return None

    def entries(self) -> Iterator[Entry]:
        if self._files is not None:
            root = Path(self.spec)
            for path in self._files:
                yield Entry({"key": str(path.relative_to(root)), "path": str(path.resolve()), "caption": ""})
            return
        if self._table is not None:
            for i, (path, caption) in enumerate(zip(*self._table)):
                if not path or not os.path.isfile(path):
                    yield Entry(skip="missing_image")
                    continue
                text = caption.strip() if _caption_problem(caption) is None else ""
                yield Entry({"key": str(i), "path": str(Path(path).resolve()), "caption": text})
            return
        yield from self._shard_entries()

    def _shard_entries(self) -> Iterator[Entry]:
        from ..data.wds import IMAGE_EXTS, read_shard

        for url in self._urls:
            counts: Counter = Counter()
            for raw in read_shard(url, counts):  # the training reader: a broken shard is counted, not raised
                ext = next((e for e in IMAGE_EXTS if e in raw), None)
                if ext is None:
                    yield Entry(skip="missing_image")
                    continue
                caption = ""
                if isinstance(raw.get("txt"), bytes):
                    try:
                        caption = raw["txt"].decode("utf-8").strip()
                    except UnicodeDecodeError:
                        caption = ""
                key = raw["__key__"]
                yield Entry({"key": key, "shard": url, "member": f"{key}.{ext}", "caption": caption},
                            data=raw[ext])
            for _ in range(counts.get("bad_shard", 0)):
                yield Entry(skip="bad_shard")


class TextSource:
    """Captions of a `.txt` file (one a line) or a CSV/TSV (its caption column)."""

    def __init__(self, spec: str, *, caption_key: str = "caption", separator: str = "") -> None:
        self.spec = spec
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: no such caption file (a .txt, one caption a line, or a .csv/.tsv)")
        # surrogateescape keeps bytes that are not UTF-8, so that they are counted as bad_text, as training does.
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            if path.suffix.lower() in _TABLE_EXTS:
                sep = separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
                reader = csv.reader(fh, delimiter=sep)
                header = [h.strip() for h in next(reader, [])]
                if caption_key not in header:
                    raise ValueError(f"{spec}: no column {caption_key!r} (--caption-key); columns present: {header}")
                i = header.index(caption_key)
                self.captions = [row[i] if i < len(row) else "" for row in reader if row]
            else:
                self.captions = fh.read().split("\n")
                if self.captions and self.captions[-1] == "":
                    self.captions.pop()  # the newline that ends the last line
        if not self.captions:
            raise ValueError(f"{spec}: no captions")

    def total(self) -> int:
        return len(self.captions)

    def entries(self) -> Iterator[Entry]:
        for i, caption in enumerate(self.captions):
            reason = _caption_problem(caption)
            if reason is not None:
                yield Entry(skip=reason)
                continue
            yield Entry({"key": str(i), "caption": caption.strip()})


def open_image_source(spec: str, dataset_type: str = "auto", **kwargs) -> ImageSource:
    """`auto`: a folder, a `.csv`/`.tsv` file, else a shard spec (path, brace range, `::` list)."""
    kind = dataset_type
    if kind == "auto":
        if Path(spec).is_dir():
            kind = "folder"
        elif spec.lower().endswith(_TABLE_EXTS):
            kind = "csv"
        else:
            kind = "webdataset"
    return ImageSource(spec, kind, **kwargs)


def open_text_source(spec: str, **kwargs) -> TextSource:
    """A caption file for a text index."""
    return TextSource(spec, **kwargs)


def read_row_image(row: dict) -> bytes:
    """The image bytes of an index row: its file, or its member of a local, uncompressed or gzipped shard."""
    if row.get("path"):
        return Path(row["path"]).read_bytes()
    if row.get("shard"):
        return _shard_members(str(row["shard"]))(row["member"])
    raise ValueError(f"row {row.get('key')!r} has no image (a text index?)")


_SHARDS: dict = {}
_SHARDS_LOCK = threading.Lock()


def _shard_members(url: str):
    """A reader of one shard's members by name (the tar is indexed once and kept open)."""
    with _SHARDS_LOCK:
        reader = _SHARDS.get(url)
        if reader is None:
            reader = _SHARDS[url] = _open_members(url)
    return reader


def _open_members(url: str):
    import tarfile

    path = url[len("file:"):].removeprefix("//") if url.startswith("file:") else url
    if path.startswith("pipe:") or "://" in path:
        raise ValueError(f"{url} is not a local shard: its images cannot be shown")
    tar = tarfile.open(path)  # random access by member offset; plain or compressed
    members = {}
    try:
        for m in tar:
            if m.isfile():
                members[m.name] = m
    except (tarfile.TarError, OSError, EOFError) as exc:
        # A shard cut short: training keeps the samples before the break, and so does the index.
        log.warning("shard %s is broken after %d members (%s); showing those", url, len(members), exc)
    # webdataset lower-cases extensions (`X.JPG` is sample `X`, extension `jpg`)
    members.update({name.lower(): m for name, m in list(members.items()) if name.lower() not in members})
    lock = threading.Lock()

    def reader(name: str) -> bytes:
        member = members.get(name) or members.get(name.lower())
        if member is None:
            raise FileNotFoundError(f"{url} has no member {name!r} (was the shard rewritten?)")
        with lock:  # one file position per open tar
            return tar.extractfile(member).read()

    return reader
