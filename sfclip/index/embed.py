"""`embed_images` / `embed_texts`: a checkpoint's embeddings of a collection, written in resumable chunks.

An embedding folder holds:

- `meta.json`: what was embedded (kind `image` or `text`, the source, the checkpoint, the embedding
  width, the dtype); written first, and checked on resume (another request into the same folder fails);
- `emb-NNNNN.npy` (float16, (n, E), L2-normalized rows) and `rows-NNNNN.jsonl` (one JSON object a row:
  `key`, `caption`, and `path`, or `shard` + `member` for WebDataset samples) per chunk;
- `progress.json`: chunks and rows written, the source position reached, the skip counts, `complete`.

A chunk's two files are written under temporary names and renamed; `progress.json` is replaced after
them. A run killed at any point therefore restarts after its last recorded chunk (a chunk written but not
yet recorded is written again), and a complete folder is left as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .sources import Entry, ImageSource, TextSource

__all__ = ["embed_images", "embed_texts", "EmbedError", "FORMAT", "META", "PROGRESS", "chunk_names",
           "read_meta", "read_progress"]

log = logging.getLogger(__name__)

FORMAT = "sfclip-embeddings"
VERSION = 1
META, PROGRESS = "meta.json", "progress.json"
# Where a test kills a run (SFCLIP_FAULT=embed_after_chunk), as the checkpoint writer's fault points do.
FAULT_AFTER_CHUNK = "embed_after_chunk"


class EmbedError(ValueError):
    """An embedding folder that cannot be used for this request; the message says what to do."""


def chunk_names(i: int) -> tuple[str, str]:
    """(embeddings file, rows file) of chunk `i`."""
    return f"emb-{i:05d}.npy", f"rows-{i:05d}.jsonl"


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EmbedError(f"{path} is corrupt ({exc}); delete the folder and embed again") from None


def read_meta(folder: str | Path) -> dict:
    """The folder's `meta.json`; raises `FileNotFoundError` when the folder holds no embeddings."""
    folder = Path(folder)
    meta = _read_json(folder / META)
    if meta is None or meta.get("format") != FORMAT:
        raise FileNotFoundError(f"no embeddings in {folder}: expected {META} written by `sfclip embed`")
    return meta


def read_progress(folder: str | Path) -> dict:
    """The folder's `progress.json` (zero chunks when absent)."""
    return _read_json(Path(folder) / PROGRESS) or {"chunks": 0, "rows": 0, "position": 0, "skipped": {},
                                                   "complete": False}


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    _replace(path, write)


def _write_chunk(folder: Path, index: int, emb: np.ndarray, rows: list[dict]) -> None:
    emb_name, rows_name = chunk_names(index)

    def write_emb(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, emb)

    _replace(folder / emb_name, write_emb)
    _write_text(folder / rows_name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _start(folder: Path, request: dict) -> dict:
    """Create the folder, or check that it holds the same request; the progress to resume from."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = _read_json(folder / META)
    if meta is None:
        if any(folder.glob("emb-*.npy")):
            raise EmbedError(f"{folder} holds embedding chunks but no {META}; give an empty or new --out folder")
        _write_text(folder / META, json.dumps(request, indent=1))
        return read_progress(folder)
    differs = [k for k in request if k not in ("created",) and meta.get(k) != request[k]]
    if differs:
        detail = "; ".join(f"{k}: {meta.get(k)!r} there, {request[k]!r} now" for k in differs[:3])
        raise EmbedError(f"{folder} holds embeddings of another request ({detail}); give another --out folder "
                         "or delete this one")
    return read_progress(folder)


class _Writer:
    """Buffers embedded rows and writes a chunk (then the progress) every `chunk_size` rows."""

    def __init__(self, folder: Path, progress: dict, chunk_size: int) -> None:
        self.folder, self.chunk_size = folder, chunk_size
        self.chunks, self.rows = int(progress["chunks"]), int(progress["rows"])
        self.skipped = Counter(progress.get("skipped", {}))
        self.position = int(progress["position"])
        self.emb: list[np.ndarray] = []
        self.pending: list[dict] = []
        self.seconds = float(progress.get("seconds", 0.0))
        self.t0 = time.perf_counter()

    def add(self, emb: np.ndarray, rows: list[dict], position: int) -> None:
        self.emb.append(emb)
        self.pending.extend(rows)
        self.position = position
        if len(self.pending) >= self.chunk_size:
            self.flush()

    def flush(self, complete: bool = False) -> None:
        from ..checkpoint import fault_point

        if self.pending:
            emb = np.concatenate(self.emb).astype(np.float16)  # (n, E)
            _write_chunk(self.folder, self.chunks, emb, self.pending)
            self.chunks += 1
            self.rows += len(self.pending)
            self.emb, self.pending = [], []
        progress = {"chunks": self.chunks, "rows": self.rows, "position": self.position,
                    "skipped": dict(self.skipped), "complete": complete,
                    "seconds": round(self.seconds + time.perf_counter() - self.t0, 2)}
        _write_text(self.folder / PROGRESS, json.dumps(progress, indent=1))
        fault_point(FAULT_AFTER_CHUNK)


def _positions(entries: Iterator[Entry], start: int) -> Iterator[tuple[int, Entry]]:
    """(position after the entry, entry), the first `start` entries dropped unread."""
    for position, entry in enumerate(entries, 1):
        if position > start:
            yield position, entry


def _run(folder: Path, request: dict, entries: Iterator[Entry], total: int | None, encode: Callable,
         prepare: Callable | None, batch_size: int, chunk_size: int, workers: int, progress_bar: bool,
         unit: str) -> dict:
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be positive, got {batch_size}, {chunk_size}")
    progress = _start(folder, request)
    if progress.get("complete"):
        log.info("%s is complete (%d rows); nothing to do", folder, progress["rows"])
        return progress
    writer = _Writer(folder, progress, max(chunk_size, batch_size))
    if writer.position:
        log.info("resuming %s after %d rows (%d source entries)", folder, writer.rows, writer.position)
    bar = tqdm(total=total, initial=writer.position, desc=f"embed {unit}s", unit=unit, disable=not progress_bar,
               dynamic_ncols=True)
    pool = ThreadPoolExecutor(max(1, workers)) if prepare is not None and workers > 1 else None
    batch: list[Entry] = []
    done_since_start = 0

    def run_batch(position: int) -> None:
        nonlocal done_since_start
        if prepare is not None:
            # PIL decodes and resizes outside the GIL, so threads overlap them with each other and the model.
            prepared = list(pool.map(prepare, batch) if pool is not None else map(prepare, batch))
        else:
            prepared = list(batch)
        keep = [(entry, x) for entry, x in zip(batch, prepared) if x is not None]
        writer.skipped["bad_image"] += len(batch) - len(keep)
        if keep:
            writer.add(encode([x for _, x in keep]), [entry.row for entry, _ in keep], position)
        else:
            writer.position = position
        done_since_start += len(batch)
        bar.update(len(batch))
        batch.clear()

    t0 = time.perf_counter()
    last = writer.position
    try:
        # A chunk is recorded with the position of the last entry it holds; skips before that position are
        # already counted in the writer, so progress.json always describes a prefix of the source.
        for last, entry in _positions(entries, writer.position):
            if entry.skip is not None:
                writer.skipped[entry.skip] += 1
                bar.update(1)
                continue
            batch.append(entry)
            if len(batch) == batch_size:
                run_batch(last)
        if batch:
            run_batch(last)
        writer.position = last
        writer.flush(complete=True)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    seconds = time.perf_counter() - t0
    result = read_progress(folder)
    skipped = {k: v for k, v in result["skipped"].items() if v}
    log.info("embedded %d %ss into %s (%d read this run in %.1fs, %.1f %ss/s); skipped: %s", result["rows"], unit,
             folder, done_since_start, seconds, done_since_start / max(seconds, 1e-9), unit, skipped or "none")
    return result


def _request(kind: str, source: str, checkpoint: str | Path | None, model, extra: dict) -> dict:
    return {"format": FORMAT, "version": VERSION, "kind": kind, "source": str(source),
            "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
            "model": getattr(getattr(model, "cfg", None), "name", None),
            "embed_dim": int(model.cfg.embed_dim), "dtype": "float16", "normalized": True, **extra}


def embed_images(model, transform, source: ImageSource, out_dir: str | Path, *, checkpoint: str | Path | None = None,
                 batch_size: int = 64, chunk_size: int = 4096, workers: int = 2, device: str | torch.device = "cpu",
                 progress: bool = True) -> dict:
    """Embed every usable image of `source` into `out_dir` (resuming an interrupted run); returns the progress.

    `model` and `transform` are what `sfclip.load(checkpoint)` returns; undecodable images are skipped and
    counted as `bad_image`, like training does.
    """
    from ..data.transforms import decode_image

    device = torch.device(device)

    def prepare(entry: Entry) -> torch.Tensor | None:
        try:
            data = entry.data if entry.data is not None else Path(entry.row["path"]).read_bytes()
            return transform(decode_image(data))  # (3, S, S)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad sample, never a crash
            log.debug("skipping undecodable image %s: %s: %s", entry.row.get("key"), type(exc).__name__, exc)
            return None

    def encode(images: list[torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            emb = model.encode_image(torch.stack(images).to(device), normalize=True)  # (b, E)
        return emb.float().cpu().numpy()

    request = _request("image", source.spec, checkpoint, model, {"source_type": source.kind})
    model.eval()
    return _run(Path(out_dir), request, source.entries(), source.total(), encode, prepare, batch_size,
                chunk_size, workers, progress, "image")


def embed_texts(model, tokenizer, source: TextSource, out_dir: str | Path, *, checkpoint: str | Path | None = None,
                batch_size: int = 256, chunk_size: int = 16384, device: str | torch.device = "cpu",
                progress: bool = True) -> dict:
    """Embed every usable caption of `source` into `out_dir` (resumable); empty captions are skipped and
    counted as `empty_caption`, undecodable ones as `bad_text`."""
    device = torch.device(device)

    def encode(entries: list[Entry]) -> np.ndarray:
        tok = tokenizer([e.row["caption"] for e in entries])
        with torch.inference_mode():
            emb = model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device),
                                    normalize=True)  # (b, E)
        return emb.float().cpu().numpy()

    request = _request("text", source.spec, checkpoint, model, {"source_type": "captions"})
    model.eval()
    return _run(Path(out_dir), request, source.entries(), source.total(), encode, None, batch_size, chunk_size,
                1, progress, "caption")
