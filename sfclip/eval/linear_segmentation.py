"""Linear-probe semantic segmentation: a 1x1 (linear) head on frozen `forward_features` patch tokens.

Protocol: training images are resized so the short side is `resize_short` (default: the window, i.e. the
model input size) and cut into non-overlapping windows (the last flush with the edge); the frozen patch
tokens of every window are cached once (float16 on the CPU: N_windows x h*w x D) and standardized with
their training statistics. The head is trained with AdamW and cross-entropy, either on patch targets
(`target="patch"`: each patch's majority label, a patch whose majority is `ignore_index` is skipped) or
on pixel targets (`target="pixel"`: logits upsampled bilinearly to the window). The test split is scored
with the sliding-window protocol of `dense` (stride default half a window) by mIoU.
Metrics: `miou`, `pixel_acc`, `iou/<class>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from sfclip.eval.dense import score_dense, segmentation_metrics, window_starts
from sfclip.eval.images import normalize, resize_short_side
from sfclip.eval.inference import check_device, evaluating
from sfclip.eval.prompts import ListSpec, load_classnames
from sfclip.eval.segmentation_data import SegmentationSet, segmentation_dataset

__all__ = ["run", "patch_targets"]


def patch_targets(masks: Tensor, grid: tuple[int, int], num_classes: int, ignore_index: int = 255) -> Tensor:
    """(B, S, S) pixel labels -> (B, h, w) majority label of each patch (ignore counts as a label)."""
    b, s, _ = masks.shape
    h, w = grid
    labels = torch.where(masks == ignore_index, num_classes, masks.long())  # ignore -> an extra slot
    onehot = F.one_hot(labels, num_classes + 1).permute(0, 3, 1, 2).float()  # (B, C+1, S, S)
    votes = F.adaptive_avg_pool2d(onehot, (h, w))  # (B, C+1, h, w)
    major = votes.argmax(1)
    return torch.where(major == num_classes, ignore_index, major)


def _windows(dataset, window: int, resize_short: int, mean, std, ignore_index: int):
    """Yield (crop (3, S, S) normalized, mask (S, S)) for every training window."""
    for i in range(len(dataset)):
        image01, mask = dataset[i]
        image01 = resize_short_side(image01, resize_short)
        mask = F.interpolate(mask[None, None].float(), size=image01.shape[-2:], mode="nearest")[0, 0].long()
        image = normalize(image01, mean, std)
        h, w = image.shape[-2:]
        image = F.pad(image, (0, max(window - w, 0), 0, max(window - h, 0)))
        mask = F.pad(mask, (0, max(window - w, 0), 0, max(window - h, 0)), value=ignore_index)
        for y in window_starts(image.shape[-2], window, window):
            for x in window_starts(image.shape[-1], window, window):
                yield image[:, y:y + window, x:x + window], mask[y:y + window, x:x + window]


def _cache(model, dataset, window, resize_short, mean, std, ignore_index, device, batch_size, progress):
    feats, masks, grid = [], [], None
    batch: list[tuple[Tensor, Tensor]] = []

    def flush() -> None:
        nonlocal grid
        out = model.forward_features(torch.stack([c for c, _ in batch]).to(device))
        grid = tuple(out["grid"])
        feats.append(out["patch"].to(torch.float16).cpu())  # (b, N, D)
        masks.append(torch.stack([m for _, m in batch]).to(torch.uint8 if ignore_index < 256 else torch.long))
        batch.clear()

    for pair in tqdm(_windows(dataset, window, resize_short, mean, std, ignore_index), desc="features",
                     disable=not progress, leave=False):
        batch.append(pair)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return torch.cat(feats), torch.cat(masks), grid


def _train_head(feats: Tensor, masks: Tensor, grid, num_classes: int, target: str, epochs: int, lr: float,
                weight_decay: float, batch: int, ignore_index: int, seed: int, device,
                progress: bool) -> nn.Linear:
    n, _, d = feats.shape
    mu = feats.float().mean((0, 1)).to(device)
    sd = feats.float().std((0, 1)).to(device)
    sd = torch.where(sd > 1e-6, sd, torch.ones_like(sd))  # constant channels carry no signal
    head = nn.Linear(d, num_classes).to(device)
    nn.init.zeros_(head.weight)  # convex problem: a deterministic start, no RNG needed
    nn.init.zeros_(head.bias)
    head.register_buffer("feat_mean", mu)
    head.register_buffer("feat_std", sd)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    if target == "patch":
        x_all = feats.reshape(n * feats.shape[1], d)  # (M, D)
        y_all = patch_targets(masks.long(), grid, num_classes, ignore_index).reshape(-1)  # (M,)
        keep = y_all != ignore_index
        x_all, y_all = x_all[keep], y_all[keep]
    for _ in tqdm(range(epochs), desc="linear head", disable=not progress, leave=False):
        order = torch.randperm(len(x_all) if target == "patch" else n, generator=gen)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            if target == "patch":
                x = (x_all[idx].to(device).float() - mu) / sd  # (b, D)
                loss = F.cross_entropy(head(x), y_all[idx].to(device))
            else:
                x = (feats[idx].to(device).float() - mu) / sd  # (b, N, D)
                logits = head(x).transpose(1, 2).reshape(len(idx), num_classes, *grid)  # (b, C, h, w)
                logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
                loss = F.cross_entropy(logits, masks[idx].to(device).long(), ignore_index=ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.eval()


def run(model: nn.Module, tokenizer, data: str | Path | tuple[SegmentationSet, SegmentationSet], *,
        classnames: ListSpec, mean: Sequence[float], std: Sequence[float], image_size: int | None = None,
        layout: str = "folder", train_split: str | None = "train", test_split: str | None = "val",
        target: str = "patch", epochs: int = 10, lr: float = 1e-3, weight_decay: float = 1e-4,
        train_batch_size: int | None = None, resize_short: int | None = None,
        test_resize_short: int | None = None, stride: int | None = None, ignore_index: int = 255,
        reduce_zero_label: bool | None = None, seed: int = 0,
        device: str | torch.device = "cpu", batch_size: int = 16, num_workers: int = 0, progress: bool = True,
        pictures_dir: str | Path | None = None, num_pictures: int = 4) -> dict[str, float]:
    """Linear-segmentation mIoU (protocol in the module docstring); `tokenizer` is unused (uniform API).

    data: a root in a `segmentation_data` layout, read at `train_split` and `test_split`, or a prepared
    (train, test) pair. `train_batch_size` counts patches (default 4096) or windows (default 16) per step.
    `test_resize_short` defaults to `resize_short`, which defaults to the window.
    """
    if target not in ("patch", "pixel"):
        raise ValueError(f"target must be 'patch' or 'pixel', got {target!r}")
    dev = check_device(model, device)
    names = load_classnames(classnames)
    if isinstance(data, tuple):
        train_set, test_set = data
    else:
        train_set, test_set = (segmentation_dataset(data, layout, s, reduce_zero_label, ignore_index)
                               for s in (train_split, test_split))
    train_set.num_classes = test_set.num_classes = len(names)
    window = image_size or int(model.visual.image_size)
    resize_short = resize_short or window
    test_resize_short = test_resize_short or resize_short
    with evaluating(model):
        feats, masks, grid = _cache(model, train_set, window, resize_short, mean, std, ignore_index, dev,
                                    batch_size, progress)
    step_batch = train_batch_size or (4096 if target == "patch" else 16)
    head = _train_head(feats, masks, grid, len(names), target, epochs, lr, weight_decay, step_batch,
                       ignore_index, seed, dev, progress)

    with evaluating(model):
        def dense_fn(crops: Tensor) -> Tensor:
            out = model.forward_features(crops)
            h, w = out["grid"]
            x = (out["patch"].float() - head.feat_mean) / head.feat_std  # (B, N, D)
            return head(x).transpose(1, 2).reshape(crops.shape[0], len(names), h, w)  # (B, C, h, w)

        result = score_dense(dense_fn, test_set, len(names), mean, std, window, stride or window // 2,
                             test_resize_short, dev, ignore_index, batch_size, num_workers, progress,
                             keep_examples=num_pictures if pictures_dir is not None else 0)
    if pictures_dir is not None:
        from sfclip.eval.pictures import save_segmentation_example

        for i, (image01, gt, pred) in enumerate(result.examples):
            save_segmentation_example(Path(pictures_dir) / f"linear_seg_{i:02d}.png", image01, gt, pred,
                                      names, ignore_index)
    return segmentation_metrics(result.confusion, names)
