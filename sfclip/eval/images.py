"""Image and mask decoding, resizing and normalization for evaluation (PIL + numpy + torch only).

Image-level tasks take a `transform` (PIL image -> normalized (3, S, S) tensor); `image_transform` builds
CLIP's usual one, the same `sfclip.data.transforms.eval_transform` that `sfclip.load()` returns (bicubic
resize of the short side, centre crop). Decoding is the data pipeline's too (EXIF rotation,
transparency, 16-bit). Dense tasks keep images unnormalized in [0, 1] and resize them as tensors,
because masks must follow the same geometry.

An image or mask that does not decode is an error naming the file, never a silent skip (training skips and
counts such samples): a score over a set with holes would not compare with scores over the whole set.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from sfclip.data.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from sfclip.data.transforms import decode_image, eval_transform, pil_to_tensor, to_rgb
from sfclip.eval.shards import Member, read_member

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "image_transform", "open_image", "pil_to_tensor", "load_mask",
    "normalize", "resize_short_side", "center_crop",
]

# OpenAI CLIP's preprocessing statistics, the usual default for CLIP-style students.
CLIP_MEAN, CLIP_STD = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def open_image(source: str | Path | Member | bytes) -> Image.Image:
    """Decode an image file (a path, a shard member, or bytes) to RGB, as the training pipeline does.

    Raises ValueError naming the file when it does not decode (FileNotFoundError when it is missing).
    """
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, Member):
        data = read_member(source)
    else:
        data = Path(source).read_bytes()
    try:
        return decode_image(data)
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for unreadable, truncated or bad files
        where = "image bytes" if isinstance(source, bytes) else f"image {source}"
        raise ValueError(f"cannot decode {where} ({_reason(e)}); replace or remove it "
                         "(evaluation does not skip images)") from e


def _reason(e: Exception) -> str:
    if isinstance(e, UnidentifiedImageError):  # its message names a BytesIO object, not the file
        return "not an image format PIL reads"
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def load_mask(source: str | Path | bytes) -> Tensor:
    """Label map PNG -> long (H, W) of class indices.

    Palette ("P", as in VOC) and greyscale ("L"/"I") PNGs store indices directly; RGB masks are refused
    because their colours need a dataset-specific palette to become labels.
    """
    name = "mask bytes" if isinstance(source, bytes) else f"mask {source}"
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as m:
            if m.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(f"{name} has mode {m.mode}; expected an index PNG (mode P or L)")
            arr = np.array(m, dtype=np.int64)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as e:
        raise ValueError(f"cannot decode {name} ({_reason(e)}); replace or remove it") from e
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
