"""Dense prediction plumbing shared by the segmentation runners: resize, sliding window, scoring.

A dense head is any `dense_fn(crops (B, 3, S, S) normalized) -> logits (B, C, h, w)`. An image is
resized so its short side is `resize_short`, padded (with the mean colour, i.e. zeros after
normalization) to at least the window, and cut into S x S windows every `stride` pixels, the last
window flush with the edge. Each window's logits are upsampled bilinearly to S x S; overlapping windows
are averaged; the result is cropped back, upsampled to the ground-truth size and turned into labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sfclip.eval import metrics
from sfclip.eval.images import normalize, resize_short_side

__all__ = ["window_starts", "sliding_logits", "predict_logits", "score_dense", "segmentation_metrics",
           "DenseResult"]

DenseFn = Callable[[Tensor], Tensor]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets covering [0, length): every `stride`, the last one flush with the end."""
    if length <= window:
        return [0]
    n = math.ceil((length - window) / stride) + 1
    return sorted({min(i * stride, length - window) for i in range(n)})


def sliding_logits(dense_fn: DenseFn, image: Tensor, window: int, stride: int,
                   batch_size: int = 16) -> Tensor:
    """(3, H, W) normalized image -> (C, H, W) logits averaged over overlapping windows."""
    if stride < 1 or stride > window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    h, w = image.shape[-2:]
    image = F.pad(image, (0, max(window - w, 0), 0, max(window - h, 0)))  # zeros == the mean colour
    hp, wp = image.shape[-2:]
    corners = [(y, x) for y in window_starts(hp, window, stride) for x in window_starts(wp, window, stride)]
    total, count = None, torch.zeros(hp, wp, device=image.device)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        crops = torch.stack([image[:, y:y + window, x:x + window] for y, x in chunk])  # (b, 3, S, S)
        logits = dense_fn(crops).float()  # (b, C, h', w')
        logits = F.interpolate(logits, size=(window, window), mode="bilinear", align_corners=False)
        if total is None:
            total = torch.zeros(logits.shape[1], hp, wp, device=image.device)  # (C, Hp, Wp)
        for (y, x), lg in zip(chunk, logits):
            total[:, y:y + window, x:x + window] += lg
            count[y:y + window, x:x + window] += 1
    return (total / count)[:, :h, :w]


def predict_logits(dense_fn: DenseFn, image01: Tensor, mean: Sequence[float], std: Sequence[float],
                   window: int, stride: int, resize_short: int | None, out_size: tuple[int, int],
                   batch_size: int = 16) -> Tensor:
    """(3, H, W) image in [0, 1] -> (C, *out_size) logits (resize, slide, upsample to the mask size)."""
    if resize_short is not None:
        image01 = resize_short_side(image01, resize_short)
    image = normalize(image01, mean, std)
    logits = sliding_logits(dense_fn, image, window, stride, batch_size)  # (C, H', W')
    if tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits[None], size=out_size, mode="bilinear", align_corners=False)[0]
    return logits


@dataclass
class DenseResult:
    confusion: Tensor  # (C, C) rows = ground truth
    examples: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)  # (image01, gt, pred)


def score_dense(dense_fn: DenseFn, dataset, num_classes: int, mean: Sequence[float], std: Sequence[float],
                window: int, stride: int, resize_short: int | None, device: torch.device,
                ignore_index: int = 255, batch_size: int = 16, num_workers: int = 0, progress: bool = True,
                to_labels: Callable[[Tensor], Tensor] | None = None, keep_examples: int = 0) -> DenseResult:
    """Confusion matrix of `dense_fn` over a segmentation set; `to_labels` maps (C, H, W) logits to labels
    (default argmax). Keeps the first `keep_examples` (image, gt, prediction) triples for pictures."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    result = DenseResult(conf)
    # batch_size=None: images differ in size, so they come one at a time (decoded by the workers).
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)
    for i, (image01, gt) in enumerate(tqdm(loader, total=len(dataset), desc="segmentation",
                                           disable=not progress, leave=False)):
        logits = predict_logits(dense_fn, image01.to(device), mean, std, window, stride, resize_short,
                                tuple(gt.shape), batch_size)  # (C, H, W)
        pred = (to_labels(logits) if to_labels else logits.argmax(0)).cpu()  # (H, W)
        result.confusion += metrics.confusion_matrix(pred, gt, num_classes, ignore_index)
        if i < keep_examples:
            result.examples.append((image01, gt, pred))
    return result


def segmentation_metrics(conf: Tensor, classnames: Sequence[str]) -> dict[str, float]:
    """miou, pixel_acc and iou/<class> for each class present in ground truth or prediction."""
    iou = metrics.iou_per_class(conf)
    out = {"miou": metrics.mean_iou(conf), "pixel_acc": metrics.pixel_accuracy(conf)}
    out.update({f"iou/{name}": v.item() for name, v in zip(classnames, iou) if not v.isnan()})
    return out
