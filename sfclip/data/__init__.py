"""The training data pipeline: shards or a csv -> decoded, augmented, tokenized batches.

`build_train_loader(cfg, tokenizer, rank, world_size, epoch, skip_batches)` is the entry point; the
batch dict it yields is the one in DEVELOPERS.md plus `skipped` (bad samples dropped since the worker's
previous batch, by reason). `eval_transform` is the eval preprocessing shared with `sfclip.load()`.
"""

from .config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, DataConfig
from .loader import DataInfo, build_train_loader
from .stream import SKIP_REASONS, BatchStream, SharedEpoch
from .transforms import EvalTransform, ImageTransform, decode_image, eval_transform, to_rgb

__all__ = [
    "DataConfig", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "build_train_loader", "DataInfo", "SKIP_REASONS",
    "BatchStream", "SharedEpoch", "ImageTransform", "EvalTransform",
    "eval_transform", "decode_image", "to_rgb",
]
