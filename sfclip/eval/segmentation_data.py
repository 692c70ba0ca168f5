"""Image + label-map sets for semantic segmentation.

Layouts (`layout`):
- `folder`: `root/images/<stem>.*` + `root/masks/<stem>.png`; with `split`, `root/images/<split>/` and
  `root/masks/<split>/`.
- `voc`: Pascal VOC, `root/JPEGImages/<stem>.jpg` + `root/SegmentationClass/<stem>.png` (palette PNGs
  read as indices; 255 = boundary, ignored); with `split`, the stems listed in
  `root/ImageSets/Segmentation/<split>.txt`, otherwise every mask.
- `ade20k`: ADEChallengeData2016, `root/images/<split>/` + `root/annotations/<split>/` (splits `training`,
  `validation`); label 0 ("other") becomes ignore and labels shift down by one (`reduce_zero_label`), so
  the 150 classes are 0..149.
Masks are index PNGs (mode P or L). Every mask must have an image with the same stem.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from sfclip.eval.images import load_mask, open_image, pil_to_tensor
from sfclip.eval.shards import IMAGE_EXTS

__all__ = ["SegmentationSet", "segmentation_dataset", "LAYOUTS"]

# layout -> (image folder, mask folder, how `split` selects: a subfolder or a stem list)
LAYOUTS = {
    "folder": ("images", "masks", "subfolder"),
    "ade20k": ("images", "annotations", "subfolder"),
    "voc": ("JPEGImages", "SegmentationClass", "list"),
}


class SegmentationSet(Dataset):
    """Items are (image (3, H, W) float in [0, 1], mask (H, W) long).

    With `num_classes` set (the runners set it to the number of class names), a mask label outside
    [0, num_classes) that is not `ignore_index` is an error naming the mask file and the label.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], reduce_zero_label: bool = False,
                 ignore_index: int = 255, num_classes: int | None = None) -> None:
        self.pairs, self.reduce_zero_label, self.ignore_index = pairs, reduce_zero_label, ignore_index
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.pairs[i]
        image = pil_to_tensor(open_image(image_path))  # (3, H, W)
        mask = load_mask(mask_path)  # (H, W)
        if mask.shape != image.shape[-2:]:
            raise ValueError(f"{mask_path} is {tuple(mask.shape)} but its image is {tuple(image.shape[-2:])}")
        if self.reduce_zero_label:
            mask = torch.where(mask == 0, self.ignore_index, mask - 1)
            mask[mask == self.ignore_index - 1] = self.ignore_index
        if self.num_classes is not None:
            self._check_labels(mask, mask_path)
        return image, mask

    def _check_labels(self, mask: Tensor, mask_path: Path) -> None:
        n = self.num_classes
        bad = mask[(mask != self.ignore_index) & ((mask < 0) | (mask >= n))]
        if bad.numel():
            label = int(bad.max())
            shown = f"{label + 1} (read as {label} after reduce_zero_label)" if self.reduce_zero_label else label
            raise ValueError(f"mask {mask_path}: label {shown} is outside the {n} class names "
                             f"(0..{n - 1}) and is not the ignore index {self.ignore_index}; fix the mask or "
                             "pass this dataset's class names")


def _image_for(folder: Path, stem: str) -> Path:
    for ext in IMAGE_EXTS:
        for candidate in (folder / f"{stem}.{ext}", folder / f"{stem}.{ext.upper()}"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no image for mask {stem!r} in {folder}")


def segmentation_dataset(root: str | Path, layout: str = "folder", split: str | None = None,
                         reduce_zero_label: bool | None = None, ignore_index: int = 255) -> SegmentationSet:
    """Open a segmentation set in one of the layouts of the module docstring.

    `reduce_zero_label` defaults to True for ade20k and False otherwise.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    root = Path(root)
    image_dir, mask_dir, split_by = LAYOUTS[layout]
    images, masks = root / image_dir, root / mask_dir
    stems: list[str] | None = None
    if split is not None and split_by == "subfolder":
        images, masks = images / split, masks / split
    elif split is not None:
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split list {split_file} not found")
        stems = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
    if not masks.is_dir() or not images.is_dir():
        raise FileNotFoundError(f"{layout} layout needs {images} and {masks}")
    if stems is None:
        stems = sorted(p.stem for p in masks.iterdir() if p.suffix.lower() == ".png")
    pairs = [(_image_for(images, s), masks / f"{s}.png") for s in stems]
    if not pairs:
        raise ValueError(f"no masks in {masks}")
    reduce = layout == "ade20k" if reduce_zero_label is None else reduce_zero_label
    return SegmentationSet(pairs, reduce, ignore_index)
