"""Cached teacher targets: frozen teachers' outputs for a fixed dataset, stored once as float16 memmaps.

A teacher is frozen and, with a deterministic view of each image, its output for a sample never
changes; computing it once and reading it back makes every later run (and every epoch) skip the
teacher. `build_target_cache` (in `target_build.py`) writes a cache folder; `DataConfig.targets` points
training at it, and the data pipeline then attaches `batch["targets"] = {teacher: {field: (B, n, D)
float16}}` by sample key, which the objective reads instead of running that teacher.

Layout of a cache folder (written under a temporary name and renamed when complete):

    meta.json                 format, version, row count, dtype, the data (spec, shard files and sizes),
                              the view, and per teacher: kind, source, config, width, sizes, field, shape
    keys.txt                  one sample key per line; line i is row i of every array
    <teacher>.<field>.npy     float16 (N, n, D): field "patch" (vision, n = grid cells) or
                              "tokens" (text, n = the tokenizer's context length; padding rows are 0)
    <teacher>.cls.npy         float16 (N, D): a vision teacher's summary token (its class token), for
                              `summary_weight`; caches written before it existed have none

The view: vision targets are only right if training renders each image exactly as the cache saw it,
so a cache with vision targets needs a crop that draws nothing at random (`crop_scale=[1, 1]`, no
flip): the random-resized-crop then always takes the largest centre crop whose aspect lies in
`ratio` (for square images, the whole image, i.e. the eval view). `check_run` refuses a run whose
teachers, grid, context length, view or data differ from what the cache holds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .spec import expand_shards, local_path, resolve_dataset_type
from .stream import MISSING_TARGET
from .transforms import worker_tensor

__all__ = ["FORMAT", "VERSION", "META", "KEYS", "MISSING_TARGET", "SUMMARY_FIELD", "TargetCacheError", "TargetCache",
           "array_name", "deterministic_view", "check_run", "data_files", "read_meta"]

log = logging.getLogger(__name__)

FORMAT, VERSION = "sfclip-targets", 1
META, KEYS = "meta.json", "keys.txt"
FIELDS = {"vision": "patch", "text": "tokens"}
SUMMARY_FIELD = "cls"  # a vision teacher's summary token (B, D), cached beside its patch tokens


class TargetCacheError(ValueError):
    """A target cache that is missing, incomplete, or does not match the run that wants to read it."""


def array_name(teacher: str, field: str) -> str:
    return f"{teacher}.{field}.npy"


def deterministic_view(crop_scale: Sequence[float], hflip: bool) -> bool:
    """True when the training crop draws nothing at random, so a cached target fits every epoch."""
    return [float(x) for x in crop_scale] == [1.0, 1.0] and not hflip


def data_files(data_cfg) -> dict[str, int]:
    """The data's local files (absolute path -> size in bytes; -1 when missing): shards or the csv.

    Remote (`pipe:`, `s3://`) shards are listed with size -1: nothing can be checked about them.
    """
    urls = [data_cfg.train_data] if resolve_dataset_type(data_cfg) == "csv" else expand_shards(data_cfg.train_data)
    out = {}
    for url in urls:
        path = local_path(url)
        if path is None:
            out[url] = -1
            continue
        path = os.path.abspath(path)
        out[path] = os.path.getsize(path) if os.path.isfile(path) else -1
    return out


def read_meta(path: str | Path) -> dict:
    """The meta of a complete cache folder; `TargetCacheError` when there is none."""
    path = Path(path)
    meta_file = path / META
    if not meta_file.is_file():
        partial = path.with_name(f".{path.name}.partial")
        hint = f" (an unfinished build is in {partial}: run build_target_cache again to finish it)" \
            if partial.is_dir() else ""
        raise TargetCacheError(f"data.targets={str(path)!r}: no target cache there ({META} missing){hint}")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise TargetCacheError(f"data.targets={str(path)!r}: not a {FORMAT} v{VERSION} cache "
                               f"(format {meta.get('format')!r}, version {meta.get('version')!r}); rebuild it")
    return meta


class TargetCache:
    """Read side of a cache: key lookup and batched rows, opened lazily in each DataLoader worker.

    Only the folder path travels to the workers (pickling drops the index and the memmaps), so each
    worker maps the arrays itself and the page cache is shared between them.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self._index: dict[str, int] | None = None
        self._arrays: dict[str, dict[str, np.ndarray]] | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "meta": self.meta, "_index": None, "_arrays": None}

    @property
    def teachers(self) -> dict[str, dict]:
        return self.meta["teachers"]

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            keys = (self.path / KEYS).read_text(encoding="utf-8").split("\n")[: self.meta["num_rows"]]
            self._index = {k: i for i, k in enumerate(keys)}
        return self._index

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return int(self.meta["num_rows"])

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """`{teacher: {field: memmap (N, n, D) or (N, D) float16}}`, mapped on first use."""
        if self._arrays is None:
            self._arrays = {}
            for name, t in self.teachers.items():
                fields = [t["field"]] + ([t["summary_field"]] if "summary_field" in t else [])
                self._arrays[name] = {f: np.load(self.path / array_name(name, f), mmap_mode="r") for f in fields}
        return self._arrays

    def lookup(self, keys: Sequence[str], shared: bool = True) -> dict[str, dict[str, torch.Tensor]]:
        """The rows of `keys` (all present) as `{teacher: {field: (B, n, D) or (B, D) float16}}`.

        Inside a DataLoader worker the tensors are allocated in shared memory (as the image batch is),
        so handing the batch to the main process copies nothing more.
        """
        rows = np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))
        out: dict[str, dict[str, torch.Tensor]] = {}
        for name, fields in self.arrays().items():
            out[name] = {}
            for field, arr in fields.items():
                t = worker_tensor((len(rows), *arr.shape[1:]), shared, torch.float16)  # (B, n, D)
                t.numpy()[...] = arr[rows]
                out[name][field] = t
        return out


def _teacher_problems(tc, cached: dict, student_grid: int, context_length: int) -> list[str]:
    name, problems = tc.name, []
    if tc.kind != cached["kind"]:
        return [f"teacher {name!r} is a {tc.kind} teacher in the run but {cached['kind']} in the cache"]
    if tc.source != cached["source"]:
        problems.append(f"teacher {name!r}: source {tc.source!r} in the run, {cached['source']!r} in the cache")
    if list(tc.layers) != list(cached["layers"]):
        problems.append(f"teacher {name!r}: layers {list(tc.layers)} in the run, {cached['layers']} in the cache")
    # The dtype rule: an explicit teacher dtype needs a cache computed in that dtype; "auto" asks for speed, not
    # for a dtype, and takes a cache computed in any (docs/defaults.md, teachers[].dtype).
    computed = cached.get("computed_in", cached["dtype"])
    if tc.dtype != "auto" and tc.dtype != computed:
        problems.append(f"teacher {name!r}: computes in {tc.dtype} in the run, the cache was computed in {computed} "
                        f"(set the teacher's dtype to auto or {computed} to use it, or rebuild the cache)")
    if tc.kind == "vision":
        patch, size = cached["patch_size"], cached["image_size"]
        if tc.align != cached["align"]:
            problems.append(f"teacher {name!r}: align={tc.align} in the run, {cached['align']} in the cache")
        # The size the run would render the teacher at (resample with size 0: the teacher's own, as cached).
        want = tc.image_size or (student_grid * patch if tc.align == "render" else cached["image_size_config"] or size)
        if want != size:
            problems.append(f"teacher {name!r}: the run renders it at {want} px (a {want // patch}x{want // patch} "
                            f"grid), the cache holds its {cached['grid'][0]}x{cached['grid'][1]} grid at {size} px")
    else:
        if context_length != cached["context_length"]:
            problems.append(f"teacher {name!r}: context length {context_length} in the run, "
                            f"{cached['context_length']} in the cache")
        from ..teachers.hf import text_options

        # Only the prefix: it changes every token the teacher sees, while the pooling changes no cached token.
        prefix, _ = text_options(tc.source, tc.prefix, tc.pooling)
        if prefix != cached.get("prefix", ""):
            problems.append(f"teacher {name!r}: text prefix {prefix!r} in the run, {cached.get('prefix', '')!r} in "
                            "the cache (targets of other token sequences); rebuild the cache or set the teacher's "
                            "prefix")
    return problems


def check_run(meta: dict, teachers: Sequence[Any], data_cfg, student_grid: int, context_length: int,
              where: str = "") -> list[str]:
    """Why a run cannot use this cache: raises one `TargetCacheError` listing every mismatch.

    `teachers` are the run's `TeacherConfig`s; `where` names the cache in the message. Teachers the cache
    lacks run live; cached teachers the run lacks are ignored. Returns the names of the run's teachers that
    the cache serves. Logs a warning for run data files the cache never saw (their samples are skipped and
    counted as `missing_target`).
    """
    served = [tc for tc in teachers if tc.name in meta["teachers"]]
    problems = []
    for tc in served:
        problems += _teacher_problems(tc, meta["teachers"][tc.name], student_grid, context_length)
    view = meta["view"]
    if any(tc.kind == "vision" for tc in served):
        if not deterministic_view(data_cfg.crop_scale, data_cfg.hflip):
            problems.append(f"data.crop_scale={list(data_cfg.crop_scale)}, data.hflip={data_cfg.hflip} draw a random "
                            "view each epoch, so cached vision targets would describe other pixels; use "
                            "data.crop_scale=[1.0, 1.0] and data.hflip=false with a target cache")
        elif [float(r) for r in data_cfg.ratio] != [float(r) for r in view["ratio"]]:
            problems.append(f"data.ratio={list(data_cfg.ratio)} in the run, {view['ratio']} in the cache "
                            "(it decides the centre crop of non-square images)")
    if served:
        run_files, cached_files = data_files(data_cfg), meta["data"]["files"]
        changed = [f for f, size in run_files.items() if f in cached_files and cached_files[f] != size]
        unseen = [f for f in run_files if f not in cached_files]
        if changed:
            problems.append(f"{len(changed)} data files changed size since the cache was built (first: {changed[0]}); "
                            "rebuild the cache")
        if unseen and len(unseen) == len(run_files):
            problems.append(f"none of the run's data files is in the cache (cache built from "
                            f"{meta['data']['train_data']!r}, run reads {data_cfg.train_data!r})")
        elif unseen:
            log.warning("target cache: %d of %d data files were not cached (first: %s); their samples are "
                        "skipped and counted as %s", len(unseen), len(run_files), unseen[0], MISSING_TARGET)
    if problems:
        raise TargetCacheError(f"data.targets={where or data_cfg.targets!r} does not match this run: "
                               + "; ".join(problems))
    return [tc.name for tc in served]
