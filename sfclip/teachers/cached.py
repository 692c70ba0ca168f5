"""A stand-in for a vision teacher whose targets come from a target cache (`sfclip.data.targets`).

With cached targets the objective never runs a vision teacher; it only needs the teacher's width (for
the student's distillation head) and its image size and grid (for the data pipeline and the checks). The
stand-in carries exactly that, read from the cache's meta, so training loads no teacher weights.
"""

from __future__ import annotations

import torch

from .base import VisionTeacher

__all__ = ["CachedVisionTeacher"]


class CachedVisionTeacher(VisionTeacher):
    """Width, image size and patch size of a cached vision teacher; no weights, and no forward."""

    def __init__(self, name: str, width: int, image_size: int, patch_size: int, cache: str = "") -> None:
        super().__init__(name, width, image_size, patch_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.cache = cache
        self.freeze()

    @classmethod
    def from_meta(cls, name: str, meta: dict, cache: str = "") -> CachedVisionTeacher:
        """From one teacher's entry in a cache's `meta.json`."""
        return cls(name, int(meta["width"]), int(meta["image_size"]), int(meta["patch_size"]), cache)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise RuntimeError(f"teacher {self.name!r} is served from the target cache {self.cache!r}, but a batch "
                           "without its targets reached it; build batches with data.targets set")
