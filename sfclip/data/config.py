"""`DataConfig`: everything the training data pipeline needs, validated on construction.

Plain types and lists only (no tuples), so that OmegaConf structured configs can hold it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec import DATASET_TYPES

__all__ = ["DataConfig", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class DataConfig:
    """The training data: where it is, how it is split, augmented and batched.

    `train_data` is a shard spec (`/data/{00000..01242}.tar`, several joined by `::`, or
    `pipe:aws s3 cp s3://bucket/{000..999}.tar -`) or a `.csv`/`.tsv` file of image paths and captions.
    """

    train_data: str = ""
    dataset_type: str = "auto"  # auto | webdataset | csv; auto = csv for .csv/.tsv, else webdataset
    csv_img_key: str = "filepath"
    csv_caption_key: str = "caption"
    csv_separator: str = ""  # "" = by extension: tab for .tsv, comma otherwise
    # Draw shards with replacement, independently per rank and worker (multi-node scale: no shard
    # count constraint, every rank always has data). Without it each epoch is one pass of a shuffled
    # shard list split across ranks and workers.
    resampled: bool = False
    shuffle_buffer: int = 2000  # samples, per worker, held as undecoded bytes
    workers: int = 4  # DataLoader workers per rank
    batch_size: int = 256  # per rank
    image_size: int = 224  # the student's input size
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # random resized crop area range
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # random resized crop aspect range
    # Off: captions often say "left"/"right", which a flip would make false.
    hflip: bool = False
    mean: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_STD))
    # Sizes at which the same crop is also rendered for the vision teachers. The trainer derives them from its
    # live vision teachers (its loader config, not this one); set them only to build a loader yourself.
    teacher_sizes: list[int] = field(default_factory=list)
    # Samples per epoch (all ranks). 0 = read sizes beside the shards (sizes.json, img2dataset's
    # <shard>_stats.json, __len__), or the row count of a csv.
    num_samples: int = 0
    seed: int = 0
    # A target cache folder (`sfclip.data.targets`): teacher outputs computed once, attached to each batch as
    # `batch["targets"]` by sample key instead of running those teachers. "" = run the teachers live.
    targets: str = ""
    # Resume is exact without this: checkpoints record each data worker's stream position. Only for a
    # checkpoint without them (written by an older sfclip), decode the skipped samples' images so that an
    # undecodable one in the skipped range cannot shift the stream. Costs one decode per skipped sample.
    exact_resume: bool = False

    def __post_init__(self) -> None:
        for name in ("crop_scale", "ratio", "mean", "std", "teacher_sizes"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
            elif not isinstance(value, list) and not _is_sequence(value):
                _fail(name, f"must be a list, got {value!r}")
        self.crop_scale, self.ratio = list(self.crop_scale), list(self.ratio)
        self.mean, self.std, self.teacher_sizes = list(self.mean), list(self.std), list(self.teacher_sizes)

        for name in ("train_data", "dataset_type", "csv_img_key", "csv_caption_key", "csv_separator", "targets"):
            if not isinstance(getattr(self, name), str):
                _fail(name, f"must be a string, got {getattr(self, name)!r}")
        for name in ("resampled", "hflip", "exact_resume"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, f"must be true or false, got {getattr(self, name)!r}")
        for name, low in (("shuffle_buffer", 0), ("workers", 0), ("batch_size", 1), ("image_size", 1),
                          ("num_samples", 0), ("seed", None)):
            value = getattr(self, name)
            if not _is_int(value):
                _fail(name, f"must be an integer, got {value!r}")
            if low is not None and value < low:
                _fail(name, f"must be >= {low}, got {value}")

        if self.dataset_type not in DATASET_TYPES:
            _fail("dataset_type", f"must be one of {DATASET_TYPES}, got {self.dataset_type!r}")
        if len(self.csv_separator) > 1:
            _fail("csv_separator", f"must be one character or empty (auto), got {self.csv_separator!r}")
        lo_hi = _pair("crop_scale", self.crop_scale)
        if not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
            _fail("crop_scale", f"must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        lo_hi = _pair("ratio", self.ratio)
        if not 0.0 < lo_hi[0] <= lo_hi[1]:
            _fail("ratio", f"must satisfy 0 < min <= max, got {self.ratio}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(_is_number(v) for v in values):
                _fail(name, f"must be 3 numbers (R, G, B), got {values}")
            setattr(self, name, [float(v) for v in values])
        if min(self.std) <= 0:
            _fail("std", f"must be positive, got {self.std}")
        if not all(_is_int(s) and s > 0 for s in self.teacher_sizes):
            _fail("teacher_sizes", f"must be positive integers, got {self.teacher_sizes}")


def _fail(name: str, message: str) -> None:
    raise ValueError(f"DataConfig.{name} {message}")


def _pair(name: str, values: list) -> tuple[float, float]:
    if len(values) != 2 or not all(_is_number(v) for v in values):
        _fail(name, f"must be two numbers [min, max], got {values}")
    return float(values[0]), float(values[1])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_sequence(value: object) -> bool:
    # OmegaConf hands a ListConfig to __post_init__ when it builds the object.
    return hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, (str, bytes))
