"""Heat maps of patch-text similarity: the colour map, the overlay and its colour scale (numpy + PIL only)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["VIRIDIS", "colorize", "colour_bar", "centre_crop", "overlay"]

# matplotlib's viridis at 0, 0.1, ..., 1 (perceptually uniform, readable in grey and by colour-blind eyes);
# linear interpolation between these stops is indistinguishable from the 256-entry table at this size.
VIRIDIS = ("#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884", "#44bf70", "#7ad151",
           "#bddf26", "#fde725")
_STOPS = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in VIRIDIS], np.float32)  # (11, 3)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) on the viridis scale."""
    x = np.clip(values, 0.0, 1.0) * (len(_STOPS) - 1)
    lo = np.minimum(np.floor(x).astype(np.int64), len(_STOPS) - 2)
    frac = (x - lo)[..., None]
    return np.rint(_STOPS[lo] * (1 - frac) + _STOPS[lo + 1] * frac).astype(np.uint8)


def colour_bar(width: int = 256, height: int = 14) -> Image.Image:
    """The colour scale, low on the left, high on the right."""
    row = colorize(np.linspace(0.0, 1.0, width, dtype=np.float32))  # (W, 3)
    return Image.fromarray(np.repeat(row[None], height, axis=0))


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, centre square: the region the eval transform shows the model."""
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def overlay(image: Image.Image, similarity: np.ndarray, size: int = 320,
            alpha: float = 0.55) -> tuple[Image.Image, float, float]:
    """(the centre crop with the (h, w) similarity map blended over it, the map's min, its max).

    The map is stretched from its minimum (dark) to its maximum (yellow); the two values label the scale.
    """
    sim = np.asarray(similarity, np.float32)  # (h, w)
    lo, hi = float(sim.min()), float(sim.max())
    up = F.interpolate(torch.from_numpy(sim)[None, None], size=(size, size), mode="bilinear",
                       align_corners=False)[0, 0].numpy()  # (size, size)
    scaled = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
    heat = colorize(scaled).astype(np.float32)  # (size, size, 3)
    base = np.asarray(centre_crop(image.convert("RGB"), size), np.float32)
    blended = np.rint(base * (1 - alpha) + heat * alpha).astype(np.uint8)
    return Image.fromarray(blended), lo, hi
