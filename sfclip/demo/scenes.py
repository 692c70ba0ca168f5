"""The demo dataset: tinted Fashion-MNIST objects composited on photo crops, with captions and masks.

A scene is one background crop (`sources.BACKGROUNDS`) with one to three objects, each a Fashion-MNIST
glyph resized, tinted in a named colour and alpha-composited (alpha from the glyph's own intensity).
Every scene comes with English captions naming each object's colour, class and place and the
background, a per-pixel class mask and JSON metadata.

Masks (uint8): 0 background, 1 + class id where the object is solid (alpha >= 0.5), and 255 (ignore)
on its soft, anti-aliased rim and on faint, see-through parts of a glyph (0.1 < alpha < 0.5) with
`ignore_border=True`: those pixels are a blend of object and background, so no label is right for them.
A later object paints over an earlier one.

Randomness: scenes are drawn in fixed chunks of 256, each from its own seed (seed, split, stream,
chunk), so scene i is the same whatever the number of scenes asked for, and the same seed gives
byte-identical files. Train scenes use only the train glyphs, test scenes only the t10k glyphs, and
validation scenes ("val") only glyphs held out of the train file that training never uses
(`sources.load_objects`).

Writers: `write_shards` (WebDataset tars laid out as img2dataset writes them) and `write_eval_sets`
(zero-shot classification CSV, Karpathy-style retrieval JSON, segmentation folders); both write under a
temporary name and rename, so a reader never sees a half-written file. Masks and evaluation images are
PNG (exact); training shards default to JPEG quality 95 for speed (PNG on request).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sfclip.checkpoint import atomic_dir
from sfclip.demo import vocab
from sfclip.demo.sources import BACKGROUNDS, BackgroundPyramid, ObjectSource, background_pyramid, load_objects

__all__ = ["IGNORE_INDEX", "SceneConfig", "Scenes", "iter_scenes", "render_scenes", "write_eval_sets",
           "write_shards"]

IGNORE_INDEX = 255
_CHUNK = 256  # scenes per random stream; fixed, so scene i never depends on how many were asked for
_CANDIDATES = 32  # placements tried per object before the object is left out of its scene
_SOLID, _FAINT = 0.5, 0.1  # alpha thresholds: object label at or above _SOLID, ignore between
_SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
_GLYPH = 28  # side of a (Fashion-)MNIST image
_LEVELS = 8  # background scales between background_crop[1] and [0]


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _range(name: str, value, lo: float, hi: float) -> tuple:
    value = tuple(value)
    if len(value) != 2 or not value[0] <= value[1] or not (lo <= value[0] and value[1] <= hi):
        raise ValueError(f"{name} must be a (min, max) pair with {lo} <= min <= max <= {hi}, got {value}")
    return value


@dataclass
class SceneConfig:
    """How scenes look. Sizes are in pixels of the square image, scales are fractions of its side."""

    image_size: int = 112
    objects_per_scene: tuple[int, int] = (1, 3)
    # Side of the 28-px glyph box (objects fill ~70-95% of it).
    object_scale: tuple[float, float] = (0.3, 0.55)
    # Largest allowed intersection of two objects' boxes, over the smaller box; tried placements that
    # break it are skipped and an object with no valid placement is left out.
    max_overlap: float = 0.15
    colours: tuple[str, ...] = tuple(vocab.COLOURS)
    colour_jitter: int = 12  # per-object uniform jitter of each RGB channel, +-
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    background_crop: tuple[float, float] = (0.4, 1.0)  # crop side over the photo's shorter side
    alpha_gain: float = 2.0  # alpha = min(1, gain * intensity): glyph interiors are opaque
    ignore_border: bool = True
    # Captions say where each object is ("in the top left corner"). Off, a caption names colour, class and
    # background only, so that fewer scenes of a batch can be told apart without the class (the demo).
    caption_places: bool = True
    source: str = "auto"  # "auto" (Fashion-MNIST, else MNIST), "fashion" or "digits"
    # Label ids of the glyph set to draw, relabelled 0..k-1 in this order; () = all ten.
    classes: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.image_size) or not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be an int in [16, 1024], got {self.image_size!r}")
        self.objects_per_scene = _range("objects_per_scene", self.objects_per_scene, 1, 4)
        if not all(_is_int(k) for k in self.objects_per_scene):
            raise ValueError(f"objects_per_scene must hold ints, got {self.objects_per_scene}")
        self.object_scale = _range("object_scale", self.object_scale, 0.05, 1.0)
        self.background_crop = _range("background_crop", self.background_crop, 0.05, 1.0)
        if not 0.0 <= self.max_overlap <= 1.0:
            raise ValueError(f"max_overlap must be in [0, 1], got {self.max_overlap}")
        self.colours = tuple(self.colours)
        bad = [c for c in self.colours if c not in vocab.COLOURS]
        if bad or len(set(self.colours)) != len(self.colours):
            raise ValueError(f"colours must be distinct names from {list(vocab.COLOURS)}, got {self.colours}")
        if len(self.colours) < self.objects_per_scene[1]:
            raise ValueError(f"colours: need at least {self.objects_per_scene[1]} (objects in a scene get "
                             f"distinct colours), got {len(self.colours)}")
        if not _is_int(self.colour_jitter) or not 0 <= self.colour_jitter <= 64:
            raise ValueError(f"colour_jitter must be an int in [0, 64], got {self.colour_jitter!r}")
        self.backgrounds = tuple(self.backgrounds)
        bad = [b for b in self.backgrounds if b not in BACKGROUNDS]
        if not self.backgrounds or bad or len(set(self.backgrounds)) != len(self.backgrounds):
            raise ValueError(f"backgrounds must be distinct names from {list(BACKGROUNDS)}, "
                             f"got {self.backgrounds}")
        if not 1.0 <= self.alpha_gain <= 10.0:
            raise ValueError(f"alpha_gain must be in [1, 10], got {self.alpha_gain}")
        self.classes = tuple(self.classes)
        if self.classes:
            vocab.parse_source("fashion:" + ",".join(str(c) for c in self.classes))  # distinct ids in [0, 10)
        if self.source not in ("auto", "fashion", "digits"):
            raise ValueError(f"source must be 'auto', 'fashion' or 'digits', got {self.source!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")


@dataclass
class Scenes:
    """A batch of scenes. `meta[i]` describes scene i (objects, background, sources, captions)."""

    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    masks: np.ndarray  # (N, S, S) uint8: 0 background, 1 + class id, 255 ignore
    captions: list[list[str]]  # num_captions per scene, from distinct templates
    meta: list[dict]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        """Class id of each scene's first object: the label of single-object scenes (linear probes)."""
        return np.array([m["objects"][0]["class_id"] for m in self.meta], dtype=np.int64)


def _by_class(objs: ObjectSource, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(objs.labels, kind="stable")
    counts = np.bincount(objs.labels, minlength=num_classes)
    return order, np.concatenate([[0], np.cumsum(counts)[:-1]]), counts


def _resample_matrix(offset: np.ndarray, side: np.ndarray, start: np.ndarray, window: int) -> np.ndarray:
    """(n, window, 28) weights that place a 28-px glyph at `offset` with `side` px, for image pixels
    start..start+window-1: a triangle filter, widened when shrinking so small objects do not alias."""
    step = _GLYPH / side  # (n,) glyph px per image px
    p = start[:, None] + np.arange(window, dtype=np.float32) + 0.5  # (n, W) pixel centres
    u = (p - offset[:, None]) * step[:, None] - 0.5
    width = np.maximum(step, 1.0)[:, None, None]
    d = np.abs(u[:, :, None] - np.arange(_GLYPH, dtype=np.float32))  # (n, W, 28)
    return (np.maximum(0.0, 1.0 - d / width) / width).astype(np.float32)


def _draw(rng: np.random.Generator, cfg: SceneConfig, num_classes: int, m: int) -> dict:
    """Every random choice of a chunk, always drawn at full chunk size so any prefix is stable."""
    c, k = _CHUNK, cfg.objects_per_scene[1]
    lo, hi = cfg.objects_per_scene
    d = {
        "count": rng.integers(lo, hi + 1, c),
        "cls": rng.integers(0, num_classes, (c, k)),
        "pick": rng.random((c, k)),
        "scale": rng.uniform(*cfg.object_scale, (c, k)) * cfg.image_size,
        "colour": np.argsort(rng.random((c, len(cfg.colours))), axis=1)[:, :k],
        "jitter": rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1, (c, k, 3)),
        "cand": rng.random((c, k, _CANDIDATES, 2)),
        "bg": rng.integers(0, len(cfg.backgrounds), c),
        "level": rng.integers(0, _LEVELS, c),
        "corner": rng.random((c, 2)),
        "flip": rng.random(c) < 0.5,
    }
    return {key: v[:m] for key, v in d.items()}


def _place(draws: dict, gbox: np.ndarray, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    """Glyph-box origins (m, k, 2) as (x, y) and which objects made it into their scene (m, k)."""
    size, scale = cfg.image_size, draws["scale"]
    m, k = scale.shape
    ext = gbox * (scale / _GLYPH)[..., None]  # (m, k, 4) object box inside its glyph box: x0, y0, x1, y1
    lo = -ext[..., :2]  # origins keeping the object inside the image
    hi = size - ext[..., 2:]
    origin = lo[:, :, None] + draws["cand"] * (hi - lo)[:, :, None]  # (m, k, T, 2)
    boxes = np.concatenate([origin + ext[:, :, None, :2], origin + ext[:, :, None, 2:]], -1)  # (m, k, T, 4)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (m, k, T)
    rows = np.arange(m)
    placed = np.zeros((m, k, 4), np.float32)
    placed_area = np.zeros((m, k), np.float32)
    active = np.zeros((m, k), bool)
    out = np.zeros((m, k, 2), np.float32)
    for j in range(k):
        ok = np.ones((m, _CANDIDATES), bool)
        for i in range(j):
            pb = placed[:, i, None, :]  # (m, 1, 4)
            iw = np.minimum(boxes[:, j, :, 2], pb[..., 2]) - np.maximum(boxes[:, j, :, 0], pb[..., 0])
            ih = np.minimum(boxes[:, j, :, 3], pb[..., 3]) - np.maximum(boxes[:, j, :, 1], pb[..., 1])
            inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
            smaller = np.minimum(area[:, j], placed_area[:, i, None])
            ok &= (inter <= cfg.max_overlap * smaller) | ~active[:, i, None]
        t = ok.argmax(1)
        active[:, j] = (j < draws["count"]) & ok[rows, t]
        placed[:, j], placed_area[:, j] = boxes[rows, j, t], area[rows, j, t]
        out[:, j] = origin[rows, j, t]
    return out, active


def _pick_glyphs(objs: ObjectSource, tables, d: dict, gain: float) -> tuple[np.ndarray, ...]:
    """Glyph rows (m, k), glyphs (m, k, 28, 28) scaled to peak 1, and their solid boxes (m, k, 4)."""
    order, starts, counts = tables
    idx = order[starts[d["cls"]] + (d["pick"] * counts[d["cls"]]).astype(np.int64)]
    glyphs = objs.images[idx].astype(np.float32)
    glyphs /= np.maximum(glyphs.max((-1, -2), keepdims=True), 1.0)  # every glyph reaches full opacity
    solid = glyphs * gain >= _SOLID
    rows_on, cols_on = solid.any(-1), solid.any(-2)  # (m, k, 28)
    gbox = np.stack([cols_on.argmax(-1), rows_on.argmax(-1), _GLYPH - cols_on[..., ::-1].argmax(-1),
                     _GLYPH - rows_on[..., ::-1].argmax(-1)], -1).astype(np.float32)
    return idx, glyphs, gbox


def _paint_objects(canvas: np.ndarray, masks: np.ndarray, glyphs: np.ndarray, origin: np.ndarray,
                   active: np.ndarray, d: dict, cfg: SceneConfig) -> np.ndarray:
    """Composite every active object onto `canvas` and label it in `masks`, in place, one object slot
    at a time (later slots on top). Returns each object's solid box (m, k, 4); drops (in `active`) an
    object that came out with no solid pixel."""
    size, gain = cfg.image_size, cfg.alpha_gain
    tint = np.asarray([vocab.COLOURS[c] for c in cfg.colours], np.float32)
    # Objects are drawn in windows just big enough for the largest one: compositing whole canvases was
    # memory-bound and 3-4x slower, and a window per scene stays in cache.
    win = min(size, int(np.ceil(cfg.object_scale[1] * size)) + 2)
    bboxes = np.zeros(active.shape + (4,), np.int64)
    for j in range(active.shape[1]):
        sel = np.flatnonzero(active[:, j])
        scale = d["scale"][sel, j]
        wy = np.clip(np.floor(origin[sel, j, 1]), 0, size - win).astype(np.int64)  # window corners
        wx = np.clip(np.floor(origin[sel, j, 0]), 0, size - win).astype(np.int64)
        ay = _resample_matrix(origin[sel, j, 1], scale, wy, win)  # (n, W, 28)
        ax = _resample_matrix(origin[sel, j, 0], scale, wx, win)
        v = np.clip(ay @ glyphs[sel, j] @ ax.transpose(0, 2, 1), 0.0, 1.0)  # (n, W, W)
        alpha = np.minimum(v * gain, 1.0)
        on = alpha >= _SOLID
        r_on, c_on = on.any(2), on.any(1)  # (n, W)
        bboxes[sel, j] = np.stack([wx + c_on.argmax(1), wy + r_on.argmax(1),
                                   wx + win - c_on[:, ::-1].argmax(1), wy + win - r_on[:, ::-1].argmax(1)], 1)
        active[sel, j] &= r_on.any(1)
        label = np.where(on, (d["cls"][sel, j] + 1).astype(np.uint8)[:, None, None], np.uint8(IGNORE_INDEX))
        keep = ~on & ((alpha <= _FAINT) if cfg.ignore_border else True)  # mask pixels left as they were
        rgb = np.clip(tint[d["colour"][sel, j]] + d["jitter"][sel, j], 0, 255)  # (n, 3)
        shade = 0.45 + 0.55 * v  # keeps the glyph's own texture under the tint
        for t, i in enumerate(sel):
            if active[i, j]:
                y, x = wy[t], wx[t]
                cw = canvas[i, y:y + win, x:x + win]
                cw += alpha[t, :, :, None] * (rgb[t] * shade[t, :, :, None] - cw)
                mw = masks[i, y:y + win, x:x + win]
                mw[:] = np.where(keep[t], mw, label[t])
    return bboxes


def _render_chunk(cfg: SceneConfig, objs: ObjectSource, tables, pyramid: BackgroundPyramid, split: str,
                  seed: int, stream: int, chunk: int, m: int, num_captions: int) -> Scenes:
    layout_ss, text_ss = np.random.SeedSequence([seed, _SPLIT_IDS[split], stream, chunk]).spawn(2)
    rnd = random.Random(int(text_ss.generate_state(1)[0]))
    size = cfg.image_size
    d = _draw(np.random.default_rng(layout_ss), cfg, objs.num_classes, m)
    idx, glyphs, gbox = _pick_glyphs(objs, tables, d, cfg.alpha_gain)
    origin, active = _place(d, gbox, cfg)

    canvas = np.empty((m, size, size, 3), np.float32)
    crop_boxes = pyramid.crops(d["bg"], d["level"], d["corner"], d["flip"], out=canvas)
    masks = np.zeros((m, size, size), np.uint8)
    bboxes = _paint_objects(canvas, masks, glyphs, origin, active, d, cfg)
    images = (canvas + 0.5).astype(np.uint8)  # every pixel is a convex blend of [0, 255] values: no clip

    names = vocab.classnames("en", objs.kind)
    captions, meta = [], []
    for i in range(m):
        objects = [{"class_id": int(d["cls"][i, j]), "class_name": names[d["cls"][i, j]],
                    "colour": cfg.colours[d["colour"][i, j]],
                    "position": vocab.position_word(bboxes[i, j], size),
                    "bbox": [int(x) for x in bboxes[i, j]], "source_index": int(objs.indices[idx[i, j]])}
                   for j in range(idx.shape[1]) if active[i, j]]
        bg = int(d["bg"][i])
        caps = [vocab.caption(objects, pyramid.captions[bg], t, objs.kind, rnd, cfg.caption_places)
                for t in rnd.sample(vocab.CAPTION_TEMPLATES, num_captions)]
        captions.append(caps)
        meta.append({"index": chunk * _CHUNK + i, "split": split, "image_size": size,
                     "source": {"dataset": objs.dataset, "file": objs.file},
                     "background": {"name": pyramid.names[bg], "caption": pyramid.captions[bg],
                                    "crop_xys": [round(float(x)) for x in crop_boxes[i]],
                                    "flip": bool(d["flip"][i])},
                     "objects": objects, "captions": caps})
    return Scenes(images, masks, captions, meta)


def iter_scenes(split: str, num_samples: int, seed: int | None = None, cfg: SceneConfig | None = None, *,
                num_captions: int = 1, stream: int = 0) -> Iterator[Scenes]:
    """Scenes 0..num_samples-1 of `split` in batches of up to 256; `seed` defaults to `cfg.seed`.

    `stream` picks an independent sequence of scenes for the same seed (the eval sets use 1 and 2).
    """
    cfg = cfg or SceneConfig()
    seed = cfg.seed if seed is None else seed
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_IDS)}, got {split!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not _is_int(num_samples) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative int, got {num_samples!r}")
    if not 1 <= num_captions <= len(vocab.CAPTION_TEMPLATES):
        raise ValueError(f"num_captions must be in [1, {len(vocab.CAPTION_TEMPLATES)}], got {num_captions}")
    objs = load_objects(split, cfg.source, cfg.classes)
    tables = _by_class(objs, objs.num_classes)
    pyramid = background_pyramid(cfg.backgrounds, cfg.image_size, cfg.background_crop, _LEVELS)
    for chunk in range((num_samples + _CHUNK - 1) // _CHUNK):
        m = min(_CHUNK, num_samples - chunk * _CHUNK)
        yield _render_chunk(cfg, objs, tables, pyramid, split, seed, stream, chunk, m, num_captions)


def render_scenes(split: str, num_samples: int, seed: int | None = None, cfg: SceneConfig | None = None, *,
                  num_captions: int = 1, stream: int = 0) -> Scenes:
    """All scenes in one batch (about 50 MB per 1,000 scenes at 112 px; `iter_scenes` streams them)."""
    parts = list(iter_scenes(split, num_samples, seed, cfg, num_captions=num_captions, stream=stream))
    if not parts:
        size = (cfg or SceneConfig()).image_size
        return Scenes(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8), [], [])
    return Scenes(np.concatenate([p.images for p in parts]), np.concatenate([p.masks for p in parts]),
                  [c for p in parts for c in p.captions], [x for p in parts for x in p.meta])


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(array).save(buf, "PNG", compress_level=1)  # level 1: 3x faster, ~1% bigger
    else:
        Image.fromarray(array).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0  # fixed fields: same seed, same bytes
    tar.addfile(info, io.BytesIO(data))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_shards(out_dir: str | os.PathLike, split: str, num_samples: int, seed: int | None = None,
                 samples_per_shard: int = 1000, cfg: SceneConfig | None = None, *,
                 image_format: str = "jpg") -> list[Path]:
    """Write `num_samples` scenes as WebDataset shards `00000.tar`, `00001.tar`, ... in `out_dir`.

    Each sample `<key>` has `<key>.jpg` (or `.png`), `<key>.seg.png` (class mask, always PNG: exact),
    `<key>.txt` (caption) and `<key>.json` (metadata). JPEG (quality 95) is the default for training
    images: it encodes ~10x faster than PNG and is a third of the size, which matters for a demo that
    writes its data on two CPU cores; evaluation sets stay PNG. Keys are the shard number then the index
    in the shard, as img2dataset writes them. Also writes `sizes.json` (samples per shard, as open_clip
    reads it) and `info.json` (split, seed, config, class names), and deletes `NNNNN.tar` files of an
    earlier run that this one did not rewrite.
    """
    cfg = cfg or SceneConfig()
    seed = cfg.seed if seed is None else seed
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if not _is_int(samples_per_shard) or samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be a positive int, got {samples_per_shard!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digits = len(str(samples_per_shard - 1))
    paths: list[Path] = []
    sizes: dict[str, int] = {}
    tar, tmp = None, None
    try:
        for scenes in iter_scenes(split, num_samples, seed, cfg):
            for image, mask, caps, meta in zip(scenes.images, scenes.masks, scenes.captions, scenes.meta):
                shard, pos = divmod(meta["index"], samples_per_shard)
                if pos == 0:
                    if tar is not None:
                        tar.close()
                        os.replace(tmp, paths[-1])
                    paths.append(out / f"{shard:05d}.tar")
                    tmp = out / f".{shard:05d}.tar.tmp"
                    tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)  # short ASCII names
                    sizes[paths[-1].name] = 0
                key = f"{shard:05d}{pos:0{digits}d}"
                _tar_add(tar, f"{key}.{image_format}", _encode(image, image_format))
                _tar_add(tar, f"{key}.seg.png", _encode(mask, "png"))
                _tar_add(tar, f"{key}.txt", caps[0].encode())
                _tar_add(tar, f"{key}.json", json.dumps({"key": key, **meta}, ensure_ascii=False).encode())
                sizes[paths[-1].name] += 1
        if tar is not None:
            tar.close()
            os.replace(tmp, paths[-1])
            tar = None
    finally:
        if tar is not None:
            tar.close()
            tmp.unlink(missing_ok=True)
    # Shards left from an earlier, larger run would be read by a glob or a stale brace pattern.
    for stale in out.glob("[0-9][0-9][0-9][0-9][0-9].tar"):
        if stale not in paths:
            stale.unlink()
    _atomic_write(out / "sizes.json", json.dumps(sizes, indent=1).encode())
    _atomic_write(out / "info.json", json.dumps(_info(split, num_samples, seed, cfg), indent=1).encode())
    return paths


def _info(split: str, num_samples: int, seed: int, cfg: SceneConfig) -> dict:
    objs = load_objects(split, cfg.source, cfg.classes)
    return {"split": split, "num_samples": num_samples, "seed": seed, "config": asdict(cfg),
            "dataset": objs.dataset, "vocab_source": objs.kind, "num_classes": objs.num_classes,
            "classnames": vocab.classnames("en", objs.kind), "ignore_index": IGNORE_INDEX}


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """A folder (with `images/`) filled under a temporary name and renamed into place when complete."""
    with atomic_dir(final) as tmp:
        (tmp / "images").mkdir()
        yield tmp


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_eval_sets(out_dir: str | os.PathLike, num_samples: int = 1000, seed: int | None = None,
                    cfg: SceneConfig | None = None, *, num_captions: int = 5, split: str = "test") -> dict[str, Path]:
    """Write the evaluation sets of `split` ("test", or "val": scenes of held-out training glyphs, for
    choosing settings) under `out_dir` and return their entry points:

    - "classification": `classification/labels.csv` (`filepath,label`; paths relative to the CSV's folder,
      label = class id) over single-object scenes in `classification/images/`, with
      `classification/classnames.json` (`classnames` with articles, `templates`, `bare_classnames`, each
      a dict language -> list, as the zero-shot evaluator reads it with `language=`);
    - "retrieval": `retrieval/captions.json`, Karpathy-style (`images[i].filepath/filename` relative to
      its folder, `split` the split's name, `num_captions` `sentences` per image from distinct templates);
    - "segmentation": the folder holding `images/<stem>.png`, `masks/<stem>.png` (0 background,
      1 + class id, 255 ignore) and `classes.json`.
    Every set also has `meta.jsonl`, one scene's metadata per line.
    """
    cfg = cfg or SceneConfig()
    seed = cfg.seed if seed is None else seed
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    if split not in ("test", "val"):
        raise ValueError(f"evaluation sets are drawn from 'test' or 'val' scenes, got {split!r}")
    kind = load_objects(split, cfg.source, cfg.classes).kind

    with _atomic_dir(root / "classification") as d:
        rows, metas = [], []
        single = replace(cfg, objects_per_scene=(1, 1))
        for scenes in iter_scenes(split, num_samples, seed, single, stream=1):
            for image, meta in zip(scenes.images, scenes.meta):
                name = f"images/{meta['index']:06d}.png"
                (d / name).write_bytes(_encode(image, "png"))
                rows.append((name, meta["objects"][0]["class_id"]))
                metas.append(meta)
        with open(d / "labels.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([("filepath", "label"), *rows])
        # The evaluators' layout: {"classnames": {lang: [...]}, "templates": {lang: [...]}}. The class names
        # carry their article ("a pair of trousers", "eine Hose") because the templates need it.
        langs = vocab.LANGUAGES
        _write_json(d / "classnames.json", {
            "source": kind,
            "classnames": {lang: vocab.prompt_names(lang, kind) for lang in langs},
            "templates": {lang: vocab.templates(lang, kind) for lang in langs},
            "bare_classnames": {lang: vocab.classnames(lang, kind) for lang in langs}})
        _write_jsonl(d / "meta.jsonl", metas)

    with _atomic_dir(root / "retrieval") as r, _atomic_dir(root / "segmentation") as g:
        (g / "masks").mkdir()
        images, metas = [], []
        for scenes in iter_scenes(split, num_samples, seed, cfg, num_captions=num_captions, stream=2):
            for image, mask, caps, meta in zip(scenes.images, scenes.masks, scenes.captions, scenes.meta):
                stem = f"{meta['index']:06d}"
                png = _encode(image, "png")
                (r / "images" / f"{stem}.png").write_bytes(png)
                (g / "images" / f"{stem}.png").write_bytes(png)
                (g / "masks" / f"{stem}.png").write_bytes(_encode(mask, "png"))
                sentences = [{"raw": c, "imgid": meta["index"], "sentid": len(caps) * meta["index"] + k}
                             for k, c in enumerate(caps)]
                images.append({"filepath": "images", "filename": f"{stem}.png", "imgid": meta["index"],
                               "split": split, "sentences": sentences})
                metas.append(meta)
        _write_json(r / "captions.json", {"dataset": "sfclip-demo", "images": images})
        classes = ["background", *vocab.classnames("en", kind)]
        _write_json(g / "classes.json", {"classnames": classes, "ignore_index": IGNORE_INDEX})
        _write_jsonl(r / "meta.jsonl", metas)
        _write_jsonl(g / "meta.jsonl", metas)

    return {"classification": root / "classification" / "labels.csv",
            "retrieval": root / "retrieval" / "captions.json", "segmentation": root / "segmentation"}
