"""`build_target_cache`: run frozen teachers once over a dataset, in order, and store their outputs.

See `targets.py` for the folder layout and how training reads it. The build renders each image with the
training transform of the data config (which must draw no random crop when there are vision teachers),
so the cached targets are exactly those a live teacher would compute during training. Text targets come
from the captions tokenized as training tokenizes them (the text teacher's tokenizer, its prefix, the
student's context length); each batch runs at its longest caption and padding rows are stored as 0.

The build is resumable: rows go into `.<name>.partial/` and a row's key is appended to `keys.txt`
only after its arrays are flushed, so a killed build restarts after its last complete batch. A finished
cache whose meta matches the request is reused as it is.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..precision import bf16_reason
from .config import DataConfig
from .spec import expand_shards, resolve_dataset_type
from .stream import load_image
from .targets import (
    FIELDS,
    FORMAT,
    KEYS,
    META,
    SUMMARY_FIELD,
    VERSION,
    TargetCacheError,
    array_name,
    data_files,
    deterministic_view,
)
from .transforms import ImageTransform

__all__ = ["build_target_cache", "ordered_samples"]

log = logging.getLogger(__name__)


def ordered_samples(data_cfg: DataConfig, counts: Counter) -> Iterator[dict]:
    """Every usable raw sample of the data once, in file order (shards in spec order, csv rows in order)."""
    if resolve_dataset_type(data_cfg) == "csv":
        from .csv import caption_problem, read_table

        paths, captions = read_table(data_cfg.train_data, data_cfg.csv_img_key, data_cfg.csv_caption_key,
                                     data_cfg.csv_separator)
        for i, (path, caption) in enumerate(zip(paths, captions)):
            reason = caption_problem(caption) or (None if os.path.isfile(path) else "missing_image")
            if reason:
                counts[reason] += 1
                continue
            yield {"__key__": str(i), "caption": caption.strip(), "path": path}
        return
    from .wds import check_shards, read_shard, to_sample

    urls = expand_shards(data_cfg.train_data)
    check_shards(urls, data_cfg.train_data)
    for url in urls:
        for raw in read_shard(url, counts):
            sample = to_sample(raw, counts)
            if sample is not None:
                yield sample


def _expected_rows(data_cfg: DataConfig) -> int:
    if resolve_dataset_type(data_cfg) == "csv":
        from .csv import read_table

        return len(read_table(data_cfg.train_data, data_cfg.csv_img_key, data_cfg.csv_caption_key,
                              data_cfg.csv_separator)[0])
    from .wds import dataset_size

    size = dataset_size(expand_shards(data_cfg.train_data))
    if not size:
        raise ValueError(f"build_target_cache: no sizes.json, <shard>_stats.json or __len__ beside "
                         f"{data_cfg.train_data!r}: the cache needs the number of samples up front")
    return size


def _teacher_meta(tc, teacher, rows: int, context_length: int, device: torch.device) -> dict:
    computed_in = str(teacher.effective_dtype(device)).removeprefix("torch.")
    out = {"kind": tc.kind, "source": tc.source, "layers": list(tc.layers), "dtype": tc.dtype,
           "computed_in": computed_in, "width": int(teacher.width), "field": FIELDS[tc.kind],
           "class": type(teacher).__name__}
    if tc.kind == "vision":
        grid = list(teacher.grid)
        out.update(image_size=int(teacher.image_size), patch_size=int(teacher.patch_size), grid=grid,
                   image_size_config=tc.image_size, align=tc.align, shape=[rows, grid[0] * grid[1], teacher.width],
                   # the summary token too (a few percent more), for `summary_weight` runs
                   summary_field=SUMMARY_FIELD, summary_shape=[rows, teacher.width])
    else:
        # The prefix changes every token the teacher sees; the pooling no per-token target, recorded for reference.
        out.update(context_length=context_length, prefix=teacher.prefix, pooling=teacher.pooling,
                   prefix_config=tc.prefix, pooling_config=tc.pooling, vocab_size=len(teacher.tokenizer),
                   shape=[rows, context_length, teacher.width])
    return out


def _request(data_cfg: DataConfig, tcfgs, teachers, rows: int, context_length: int, device: torch.device) -> dict:
    return {"format": FORMAT, "version": VERSION, "dtype": "float16", "expected_rows": rows,
            "data": {"train_data": data_cfg.train_data, "dataset_type": resolve_dataset_type(data_cfg),
                     "files": data_files(data_cfg)},
            "view": {"crop_scale": list(data_cfg.crop_scale), "ratio": list(data_cfg.ratio), "hflip": data_cfg.hflip},
            "teachers": {tc.name: _teacher_meta(tc, teachers[tc.name], rows, context_length, device) for tc in tcfgs}}


def _same_request(meta: dict, request: dict) -> bool:
    return all(meta.get(k) == v for k, v in request.items())


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _open_arrays(folder: Path, request: dict, mode: str) -> dict[str, dict[str, np.ndarray]]:
    """`{teacher: {field: memmap}}`: the per-position field of every teacher, and a vision teacher's summary."""
    def open_one(name: str, field: str, shape) -> np.ndarray:
        return np.lib.format.open_memmap(folder / array_name(name, field), mode=mode, dtype=np.float16,
                                         shape=tuple(shape))

    out = {}
    for name, t in request["teachers"].items():
        out[name] = {t["field"]: open_one(name, t["field"], t["shape"])}
        if "summary_field" in t:
            out[name][t["summary_field"]] = open_one(name, t["summary_field"], t["summary_shape"])
    return out


def _done_keys(partial: Path, request: dict) -> list[str]:
    """Keys already written by an interrupted build of the same request (else start the folder afresh)."""
    if partial.is_dir() and _same_request(_read_json(partial / "request.json") or {}, request):
        text = (partial / KEYS).read_text(encoding="utf-8") if (partial / KEYS).is_file() else ""
        return [k for k in text.split("\n") if k]
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "request.json").write_text(json.dumps(request, indent=1), encoding="utf-8")
    _open_arrays(partial, request, "w+")
    return []


class CaptionMemo:
    """Text-teacher targets by caption, so a caption repeated in the data runs through the teacher once.

    Per-token targets depend only on the caption's own tokens (real tokens never attend to padding), so a
    stored row is what a new run would give. Captions repeat in web data and, far more, in templated data
    (the demo's 6000 scenes have about 2000 distinct captions). Bounded by `max_bytes`: past it, new
    captions are computed but no longer stored.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.rows: dict[str, np.ndarray] = {}
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0

    def add(self, caption: str, row: np.ndarray) -> None:
        if self.bytes + row.nbytes <= self.max_bytes:
            self.rows[caption] = row
            self.bytes += row.nbytes


def _text_targets(captions: list[str], tokens_in: dict, teacher, device: torch.device,
                  memo: CaptionMemo) -> np.ndarray:
    """Per-token targets (B, T, D) of one batch, zero on padding; the teacher runs on unseen captions only."""
    ids, am = tokens_in["input_ids"].long(), tokens_in["attention_mask"].long()  # (B, T)
    lengths = am.sum(1).tolist()
    full = np.zeros((len(captions), am.shape[1], teacher.width), np.float32)
    todo: dict[str, int] = {}  # caption -> first row of it in this batch
    for i, c in enumerate(captions):
        if c not in memo.rows:
            todo.setdefault(c, i)
    if todo:
        rows = torch.tensor(list(todo.values()))
        n = max(1, max(lengths[i] for i in rows.tolist()))  # shorter runs, same outputs for real tokens
        tokens = teacher(ids[rows, :n].to(device), am[rows, :n].to(device))["tokens"]  # (U, n, D)
        values = tokens.float().cpu().numpy()
        for j, (c, i) in enumerate(todo.items()):
            memo.add(c, values[j, :lengths[i]].astype(np.float16))  # stored at the cache's precision
            full[i, :lengths[i]] = values[j, :lengths[i]]
    memo.misses += len(todo)
    for i, c in enumerate(captions):
        row = memo.rows.get(c)
        if row is not None:
            full[i, :len(row)] = row
            memo.hits += c not in todo or todo[c] != i
        elif c in todo and todo[c] != i:  # a repeat inside this batch of a caption the memo could not keep
            full[i] = full[todo[c]]
    return full


@torch.inference_mode()
def _run_batch(samples: list[dict], images: list, transform: ImageTransform, tokenizer, teachers: dict,
               device: torch.device, memo: CaptionMemo | None = None) -> dict[str, dict[str, np.ndarray]]:
    views = transform.batch(images)["teacher_image"] if images else {}
    out = {}
    memo = memo if memo is not None else CaptionMemo()
    for name, teacher in teachers.items():
        if teacher.kind == "vision":
            x = views[teacher.image_size].to(device).float().div_(255.0)  # (B, 3, S, S) as the objective scales it
            res = teacher(x)
            out[name] = {"patch": res["patch"].float().cpu().numpy(),  # (B, N, D)
                         SUMMARY_FIELD: res["cls"].float().cpu().numpy()}  # (B, D)
        else:
            captions = [s["caption"] for s in samples]
            # tokenized exactly as the training collate does
            out[name] = {"tokens": _text_targets(captions, tokenizer(captions), teacher, device, memo)}
    return out


def build_target_cache(data_cfg: DataConfig, teachers: Sequence, out_dir: str | Path, batch_size: int = 64,
                       device: str | torch.device = "cpu", *, context_length: int = 77,
                       student_grid: int | None = None, prebuilt: Mapping | None = None,
                       progress: bool = True) -> Path:
    """Compute every teacher's target for every sample of `data_cfg.train_data` into `out_dir`.

    teachers: the run's `TeacherConfig`s (their fields are recorded and checked by training); `prebuilt`
    maps names to already built teachers, others are built here (vision ones sized for `student_grid`
    when they render). context_length: the student's text context length (text targets are per token).
    Returns `out_dir`; a complete cache of the same request is reused without running anything.
    """
    from ..tokenizer import Tokenizer

    tcfgs = list(teachers)
    if not tcfgs:
        raise ValueError("build_target_cache: no teachers")
    out = Path(out_dir)
    prebuilt = dict(prebuilt or {})
    built = {}
    for tc in tcfgs:
        if tc.name not in prebuilt:
            from ..teachers import build_teacher

            prebuilt[tc.name] = build_teacher(tc, student_grid=student_grid)
        built[tc.name] = prebuilt[tc.name].to(device).eval()
    has_vision = any(tc.kind == "vision" for tc in tcfgs)
    if has_vision and not deterministic_view(data_cfg.crop_scale, data_cfg.hflip):
        raise TargetCacheError(f"vision targets need a view that draws nothing at random: set "
                               f"data.crop_scale=[1.0, 1.0] and data.hflip=false (got {list(data_cfg.crop_scale)}, "
                               f"hflip={data_cfg.hflip})")
    rows = _expected_rows(data_cfg)
    request = _request(data_cfg, tcfgs, built, rows, context_length, torch.device(device))
    final = _read_json(out / META)
    if final is not None and final.get("complete") and _same_request(final, request):
        log.info("target cache %s is complete and matches; reusing it", out)
        return out

    text = next((built[tc.name] for tc in tcfgs if tc.kind == "text"), None)
    tokenizer = Tokenizer(text.tokenizer, context_length, text.prefix) if text is not None else None
    sizes = sorted({t.image_size for t in built.values() if t.kind == "vision"})
    transform = ImageTransform(data_cfg.image_size, data_cfg.mean, data_cfg.std, train=True,
                               crop_scale=data_cfg.crop_scale, ratio=data_cfg.ratio, teacher_sizes=sizes,
                               hflip=data_cfg.hflip)
    _, why = bf16_reason(device)
    log.info("target cache: teachers compute in %s on %s (%s)", ", ".join(
        f"{n}={t['computed_in']}" for n, t in request["teachers"].items()), device, why)
    partial = out.with_name(f".{out.name}.partial")
    done = _done_keys(partial, request)
    if done:
        log.info("target cache: resuming %s after %d rows", partial, len(done))
    arrays = _open_arrays(partial, request, "r+")
    memo = CaptionMemo()
    counts: Counter = Counter()
    seen = set(done)
    row, t0 = len(done), time.perf_counter()
    bar = tqdm(total=rows, initial=row, desc="teacher targets", unit="img", disable=not progress, dynamic_ncols=True)
    pending: list[dict] = []
    pending_views: list = []
    skip = iter(done)
    next_done = next(skip, None)
    with open(partial / KEYS, "a", encoding="utf-8") as keys_file:
        def flush() -> None:
            nonlocal row
            if not pending:
                return
            result = _run_batch(pending, pending_views, transform, tokenizer, built, torch.device(device), memo)
            if row + len(pending) > rows:
                raise TargetCacheError(f"{data_cfg.train_data!r} holds more samples than its sizes say ({rows}); "
                                       "fix sizes.json / data.num_samples")
            for name, fields in result.items():
                for field, values in fields.items():
                    arrays[name][field][row:row + len(pending)] = values.astype(np.float16)
                    arrays[name][field].flush()
            keys_file.write("".join(s["__key__"] + "\n" for s in pending))
            keys_file.flush()
            row += len(pending)
            bar.update(len(pending))
            pending.clear()
            pending_views.clear()

        for sample in ordered_samples(data_cfg, counts):
            if next_done is not None:  # resuming: walk past what the interrupted build wrote
                if sample["__key__"] == next_done:
                    next_done = next(skip, None)
                continue
            key = sample["__key__"]
            if key in seen:
                raise TargetCacheError(f"sample key {key!r} occurs twice in {data_cfg.train_data!r}; a target "
                                       "cache needs unique keys")
            if has_vision:
                try:
                    img = load_image(sample)
                except Exception:  # noqa: BLE001 - training skips undecodable images too
                    counts["bad_image"] += 1
                    continue
                pending_views.append(transform.views(img, random.Random(0)))
            seen.add(key)
            pending.append(sample)
            if len(pending) == batch_size:
                flush()
        flush()
    bar.close()
    arrays.clear()  # unmap before the rename
    meta = {**request, "num_rows": row, "complete": True, "skipped": dict(counts),
            "seconds": round(time.perf_counter() - t0, 1)}
    (partial / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    (partial / "request.json").unlink()
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    log.info("target cache: %d rows for %s in %.0fs -> %s (text teacher ran on %d distinct captions, %d repeats "
             "reused)", row, ", ".join(built), meta["seconds"], out, memo.misses, memo.hits)
    return out
