"""Image decoding and augmentation, with PIL + numpy + torch only (no torchvision).

Owns: bytes -> RGB `PIL.Image` (`decode_image`, `to_rgb`), the train view (one random resized crop
box rendered at the student size, normalized, and at every teacher size in [0, 1]), and the eval view
(resize the shorter side, centre crop, normalize) that `sfclip.load()` and the evaluators use.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import get_worker_info

from .config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["ImageTransform", "EvalTransform", "eval_transform", "decode_image", "to_rgb",
           "random_resized_crop_box", "pil_to_tensor", "worker_tensor"]

_BICUBIC = Image.Resampling.BICUBIC
_EXIF_ORIENTATION = 0x0112
# Transparent pixels are shown on white, as a browser page shows them (their RGB is often black).
_BACKGROUND = (255, 255, 255)


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes into a fully loaded RGB image; raises on anything undecodable or truncated."""
    img = Image.open(io.BytesIO(data))
    img.load()  # decode now, so a truncated file fails here and not inside the transform
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: EXIF rotation applied, transparency on white, 16-bit scaled, CMYK converted."""
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1) if hasattr(img, "getexif") else 1
    if orientation not in (1, None):
        # Browsers honour EXIF orientation, so the alt text describes the rotated picture.
        img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_depth_to_l(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    # PIL's own I -> L conversion clips at 255, which turns a 16-bit greyscale PNG almost white.
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
    else:
        scale = 1.0 / 257.0 if img.mode.startswith("I;16") or (arr.size and float(arr.max()) > 255) else 1.0
    return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")


def random_resized_crop_box(width: int, height: int, scale: Sequence[float], ratio: Sequence[float],
                            rng: random.Random) -> tuple[int, int, int, int]:
    """A crop box (left, top, right, bottom) sampled like torchvision's RandomResizedCrop.

    Ten tries at a box with area fraction in `scale` and aspect (w/h) in `ratio` (log-uniform); if none
    fits, the largest centre crop whose aspect is clamped into `ratio`.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    w, h = max(1, w), max(1, h)
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float (3, H, W) in [0, 1]."""
    arr = np.array(img, dtype=np.uint8)  # (H, W, 3), a writable copy torch can wrap
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)


class _Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.sub_(self.mean).div_(self.std)  # (3, H, W)

    def from_uint8(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) in [0, 255] -> normalized float into `out`, in two passes."""
        torch.sub(x, self.mean * 255.0, out=out)
        return out.mul_(1.0 / (255.0 * self.std))


def worker_tensor(shape: tuple[int, ...], shared: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor in shared memory inside a DataLoader worker (as torch's default_collate does), so that
    sending the batch to the main process copies nothing."""
    if not shared or get_worker_info() is None or not hasattr(torch.UntypedStorage, "_new_shared"):
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _resize_centre_crop(img: Image.Image, size: int) -> Image.Image:
    # torchvision Resize(size) + CenterCrop(size): shorter side to `size`, longer side truncated.
    width, height = img.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    img = img.resize((new_w, new_h), _BICUBIC)
    left = round((new_w - size) / 2.0)
    top = round((new_h - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


class EvalTransform:
    """PIL image -> normalized float (3, S, S): resize the shorter side to S, centre crop (OpenAI CLIP's)."""

    def __init__(self, image_size: int = 224, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                 std: Sequence[float] = OPENAI_CLIP_STD) -> None:
        self.image_size = int(image_size)
        self.normalize = _Normalize(mean, std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(pil_to_tensor(_resize_centre_crop(to_rgb(img), self.image_size)))

    def __repr__(self) -> str:
        return f"EvalTransform(image_size={self.image_size})"


def eval_transform(image_size: int = 224, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                   std: Sequence[float] = OPENAI_CLIP_STD) -> EvalTransform:
    """The eval preprocessing as a picklable callable `PIL.Image -> Tensor (3, S, S)`."""
    return EvalTransform(image_size, mean, std)


class ImageTransform:
    """One decoded image -> the student view and the teacher views of the same crop.

    Returns `{"image": (3, S, S) normalized, "teacher_image": {s: (3, s, s) uint8}}`. In training,
    one random resized crop box is drawn and every view is rendered straight from the source pixels
    inside it (`Image.resize(box=...)`), so all views show exactly the same content at their own
    resolution. In eval, every view is the resize + centre crop at its size.
    """

    def __init__(self, image_size: int = 224, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                 std: Sequence[float] = OPENAI_CLIP_STD, train: bool = True,
                 crop_scale: Sequence[float] = (0.5, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 teacher_sizes: Sequence[int] = (), hflip: bool = False) -> None:
        self.image_size = int(image_size)
        self.normalize = _Normalize(mean, std)
        self.train = train
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.teacher_sizes = sorted({int(s) for s in teacher_sizes})
        self.hflip = hflip
        self.sizes = sorted({self.image_size, *self.teacher_sizes})

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> dict:
        """`rng` drives the crop (and flip); pass a seeded one for reproducible views."""
        return self.batch([self.views(img, rng)], squeeze=True)

    def views(self, img: Image.Image, rng: random.Random | None = None) -> dict[int, np.ndarray]:
        """The rendered views as uint8 (s, s, 3) arrays by size; `batch` turns a list of them into tensors."""
        img = to_rgb(img)
        if not self.train:
            return {s: np.asarray(_resize_centre_crop(img, s)) for s in self.sizes}
        rng = rng if rng is not None else random.Random()
        box = random_resized_crop_box(img.width, img.height, self.crop_scale, self.ratio, rng)
        flip = self.hflip and rng.random() < 0.5
        views = {}
        for s in self.sizes:
            view = img.resize((s, s), _BICUBIC, box=box)
            views[s] = np.asarray(view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view)
        return views

    def batch(self, views: list[dict[int, np.ndarray]], squeeze: bool = False) -> dict:
        """Views of B images -> `{"image": (B, 3, S, S) normalized, "teacher_image": {s: (B, 3, s, s) uint8}}`.

        One uint8 -> float pass per batch, written straight into shared memory in a worker, instead of
        per-image tensors that are then stacked and copied again.
        """
        def stacked(size: int) -> torch.Tensor:
            arr = np.stack([v[size] for v in views])  # (B, s, s, 3) uint8
            return torch.from_numpy(arr).permute(0, 3, 1, 2)  # (B, 3, s, s)

        n, s, shared = len(views), self.image_size, not squeeze
        image = self.normalize.from_uint8(stacked(s), worker_tensor((n, 3, s, s), shared))  # (B, 3, S, S)
        # Teacher views stay uint8 (a quarter of float32's bytes through workers and host-to-device copies);
        # the objective scales them to [0, 1] on the device.
        teacher = {t: worker_tensor((n, 3, t, t), shared, torch.uint8).copy_(stacked(t))  # (B, 3, t, t)
                   for t in self.teacher_sizes}
        if squeeze:
            return {"image": image[0], "teacher_image": {t: x[0] for t, x in teacher.items()}}
        return {"image": image, "teacher_image": teacher}

    def __repr__(self) -> str:
        return (f"ImageTransform(image_size={self.image_size}, train={self.train}, crop_scale={self.crop_scale}, "
                f"ratio={self.ratio}, teacher_sizes={self.teacher_sizes}, hflip={self.hflip})")
