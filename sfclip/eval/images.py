"""Image and mask decoding, resizing and normalization for evaluation (PIL + numpy + torch only).

Image-level tasks take a `transform` (PIL image -> normalized (3, S, S) tensor); `image_transform` builds
CLIP's usual one, the same `sfclip.data.transforms.eval_transform` that `sfclip.load()` returns (bicubic
resize of the short side, centre crop). Decoding is the data pipeline's too (EXIF rotation,
transparency, 16-bit). Dense tasks keep images unnormalized in [0, 1] and resize them as tensors,
because masks must follow the same geometry.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from sfclip.data.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from sfclip.data.transforms import decode_image, eval_transform, pil_to_tensor, to_rgb

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "image_transform", "open_image", "pil_to_tensor", "load_mask",
    "normalize", "resize_short_side", "center_crop",
]

# OpenAI CLIP's preprocessing statistics, the usual default for CLIP-style students.
CLIP_MEAN, CLIP_STD = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def open_image(source: str | Path | bytes) -> Image.Image:
    """Decode an image file (or its bytes) to RGB, as the training pipeline does."""
    return decode_image(source if isinstance(source, bytes) else Path(source).read_bytes())


def load_mask(source: str | Path | bytes) -> Tensor:
    """Label map PNG -> long (H, W) of class indices.

    Palette ("P", as in VOC) and greyscale ("L"/"I") PNGs store indices directly; RGB masks are refused
    because their colours need a dataset-specific palette to become labels.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with Image.open(source) as m:
        if m.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(f"mask {source} has mode {m.mode}; expected an index PNG (mode P or L)")
        arr = np.array(m, dtype=np.int64)
    return torch.from_numpy(arr)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(..., 3, H, W) in [0, 1] -> normalized with per-channel mean and std."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - m) / s


def resize_short_side(image: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Resize (3, H, W) so that min(H, W) == size, keeping the aspect ratio."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    if new == (h, w):
        return image
    return F.interpolate(image[None], size=new, mode=mode, align_corners=False,
                         antialias=mode in ("bilinear", "bicubic"))[0].clamp_(0, 1)


def center_crop(image: Tensor, size: int) -> Tensor:
    """Centre crop (..., H, W) to (size, size); the input must be at least that large."""
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top:top + size, left:left + size]


def image_transform(image_size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                    resize: str = "shortest") -> Callable[[Image.Image], Tensor]:
    """CLIP's eval preprocessing: bicubic resize (short side, or `resize="squash"` to a square), centre
    crop, scale to [0, 1], normalize. Returns a picklable callable for DataLoader workers."""
    if resize == "shortest":
        return eval_transform(image_size, mean, std)
    if resize != "squash":
        raise ValueError(f"resize must be 'shortest' or 'squash', got {resize!r}")
    return _Squash(image_size, tuple(mean), tuple(std))


class _Squash:
    """Resize the whole image to a square (no crop), for sets whose objects fill the frame edge to edge."""

    def __init__(self, image_size: int, mean: tuple, std: tuple) -> None:
        self.image_size, self.mean, self.std = image_size, mean, std

    def __call__(self, img: Image.Image) -> Tensor:
        s = self.image_size
        x = pil_to_tensor(to_rgb(img).resize((s, s), Image.Resampling.BICUBIC))  # (3, S, S)
        return normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return f"image_transform({self.image_size}, mean={self.mean}, std={self.std}, resize='squash')"
