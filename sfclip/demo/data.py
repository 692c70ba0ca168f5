"""The demo's data on disk: training shards, the test sets and the probes' training sets, reused when valid.

Layout under `<out>/data/`:

    train/                 WebDataset shards of 250 scenes (one set for the largest budget; smaller
                           budgets read a prefix of its shards, scene i is the same in every budget)
    eval/                  `write_eval_sets`: classification (single-object), retrieval, segmentation: the
                           test sets, read only to report
    val/                   the same three sets drawn from validation scenes (glyphs held out of the training
                           file, never in a training scene): what every choice of a setting reads
    clip_benchmark/        the classification and retrieval test sets in CLIP_benchmark's wds/ layout
                           (`wds_scenes_classification/`, `wds_scenes_retrieval/`), for `clip_benchmark eval`
    probe/labels.csv       single-object train-split scenes for the linear probe (a stream the training
                           scenes never use)
    seg_train/             train-split scenes with masks for the linear segmentation probe

Each part records what it was made from (`demo.json`: counts, seed, scene config) and is rewritten only
when that changes, so a rerun starts training at once.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sfclip.checkpoint import atomic_dir
from sfclip.demo.scenes import SceneConfig, _encode, iter_scenes, write_eval_sets, write_shards
from sfclip.demo.settings import SHARD_SIZE, DemoSettings
from sfclip.eval.clip_benchmark_wds import export_scene_sets

__all__ = ["DemoData", "prepare_data"]

log = logging.getLogger(__name__)
_MARK = "demo.json"
# Streams of the train split besides the training scenes (stream 0).
_PROBE_STREAM, _SEG_STREAM = 3, 4


@dataclass
class DemoData:
    """Where each part is."""

    train: Path  # shard folder
    classification: Path  # labels.csv (test split, single object)
    classnames_json: Path
    retrieval: Path  # captions.json
    segmentation: Path  # folder layout: images/, masks/, classes.json
    probe_train: Path  # labels.csv (train split, single object)
    seg_train: Path  # folder layout
    clip_benchmark: Path | None = None  # wds_<name>/ folders of the test sets
    val: Path | None = field(default=None)  # the validation sets' folder (same layout as the test sets')

    def split(self, name: str) -> DemoData:
        """These paths with the evaluation sets of `name` ("test", or "val" for choosing settings)."""
        if name == "test":
            return self
        if name != "val" or self.val is None:
            raise ValueError(f"no {name!r} evaluation sets here (have 'test'{' and val' if self.val else ''})")
        return replace(self, classification=self.val / "classification" / "labels.csv",
                       classnames_json=self.val / "classification" / "classnames.json",
                       retrieval=self.val / "retrieval" / "captions.json", segmentation=self.val / "segmentation",
                       clip_benchmark=None)


def _plain(obj: dict) -> dict:
    return json.loads(json.dumps(obj))  # tuples become lists, as they come back from the file


def _valid(folder: Path, want: dict) -> bool:
    try:
        return json.loads((folder / _MARK).read_text()) == _plain(want)
    except (OSError, ValueError):
        return False


def _mark(folder: Path, want: dict) -> None:
    (folder / _MARK).write_text(json.dumps(want, indent=1))


def _train_shards(folder: Path, pairs: int, seed: int, cfg: SceneConfig) -> None:
    # A set made for a larger budget also serves a smaller one: its first shards are the same scenes.
    try:
        have = json.loads((folder / _MARK).read_text())
    except (OSError, ValueError):
        have = {}
    want = _plain({"pairs": pairs, "seed": seed, "scenes": asdict(cfg), "shard_size": SHARD_SIZE})
    if have and have.get("pairs", 0) >= pairs and {**have, "pairs": pairs} == want:
        log.info("demo data: reusing %d training scenes in %s", have["pairs"], folder)
        return
    log.info("demo data: writing %d training scenes to %s", pairs, folder)
    (folder / _MARK).unlink(missing_ok=True)
    write_shards(folder, "train", pairs, seed, SHARD_SIZE, cfg)
    _mark(folder, want)


def _single_object_csv(folder: Path, n: int, seed: int, cfg: SceneConfig, stream: int) -> None:
    with atomic_dir(folder) as tmp:
        (tmp / "images").mkdir()
        rows = []
        for scenes in iter_scenes("train", n, seed, replace(cfg, objects_per_scene=(1, 1)), stream=stream):
            for image, meta in zip(scenes.images, scenes.meta):
                name = f"images/{meta['index']:06d}.png"
                (tmp / name).write_bytes(_encode(image, "png"))
                rows.append((name, meta["objects"][0]["class_id"]))
        with open(tmp / "labels.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([("filepath", "label"), *rows])


def _segmentation_folder(folder: Path, n: int, seed: int, cfg: SceneConfig, stream: int) -> None:
    with atomic_dir(folder) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for scenes in iter_scenes("train", n, seed, cfg, stream=stream):
            for image, mask, meta in zip(scenes.images, scenes.masks, scenes.meta):
                stem = f"{meta['index']:06d}"
                (tmp / "images" / f"{stem}.png").write_bytes(_encode(image, "png"))
                (tmp / "masks" / f"{stem}.png").write_bytes(_encode(mask, "png"))


def prepare_data(root: str | Path, s: DemoSettings, seed: int = 0, cfg: SceneConfig | None = None) -> DemoData:
    """Write (or reuse) every part of the demo data under `root`."""
    root = Path(root)
    cfg = cfg or SceneConfig()
    scenes = asdict(cfg)
    _train_shards(root / "train", s.max_pairs, seed, cfg)

    eval_dir = root / "eval"
    want = {"eval_images": s.eval_images, "seed": seed, "scenes": scenes}
    if not _valid(eval_dir, want):
        log.info("demo data: writing %d test scenes per evaluation set", s.eval_images)
        write_eval_sets(eval_dir, s.eval_images, seed, cfg)
        _mark(eval_dir, want)
    want_val = {**want, "split": "val"}
    if not _valid(root / "val", want_val):
        log.info("demo data: writing %d validation scenes per evaluation set", s.eval_images)
        write_eval_sets(root / "val", s.eval_images, seed, cfg, split="val")
        _mark(root / "val", want_val)
    sets = {"classification": eval_dir / "classification" / "labels.csv",
            "retrieval": eval_dir / "retrieval" / "captions.json"}
    if not _valid(root / "clip_benchmark", want):
        # Written from the test sets on disk, so CLIP_benchmark scores the very files the demo scores.
        log.info("demo data: writing the test sets for CLIP_benchmark (wds/scenes_classification, "
                 "wds/scenes_retrieval)")
        export_scene_sets(sets, root / "clip_benchmark")
        _mark(root / "clip_benchmark", want)
    for name, n, writer, stream in (("probe", s.probe_train, _single_object_csv, _PROBE_STREAM),
                                    ("seg_train", s.seg_train, _segmentation_folder, _SEG_STREAM)):
        want = {"n": n, "seed": seed, "scenes": scenes, "stream": stream}
        if not _valid(root / name, want):
            log.info("demo data: writing %d train-split scenes for %s", n, name)
            writer(root / name, n, seed, cfg, stream)
            _mark(root / name, want)
    return DemoData(train=root / "train", classification=sets["classification"],
                    classnames_json=eval_dir / "classification" / "classnames.json",
                    retrieval=sets["retrieval"], segmentation=eval_dir / "segmentation",
                    probe_train=root / "probe" / "labels.csv", seg_train=root / "seg_train",
                    clip_benchmark=root / "clip_benchmark", val=root / "val")
