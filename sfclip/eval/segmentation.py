"""Zero-shot semantic segmentation from patch embeddings in the joint space.

Protocol (each knob changes the numbers; report them with results):
- text side: per class, the renormalized mean of its prompt embeddings (`templates`, default CLIP's 80
  ImageNet templates), as in zero-shot classification;
- image side: the short side is resized to `resize_short` (default 336; None keeps the image size),
  then windows of the model input size (`image_size`, default `model.visual.image_size`) slide every
  `stride` pixels (default half a window); `encode_patches` gives (h, w, E) per window, the logits are the
  cosine similarities with the class weights, upsampled bilinearly to the window and averaged where
  windows overlap, then upsampled to the mask size; the label is the argmax;
- patch embeddings: `encode_patches(..., readout=readout)`: `plain` (as trained, the default), or a
  training-free readout of the last block, `maskclip` or `clearclip` (`VisionTransformer.dense`);
- background (only when `background_class`, default "background", is among the class names):
  `background="prompts"` (the default) scores each of its prompts (`background_prompts`) as a row of its
  own and takes the best one per patch: the backgrounds are different things, and the mean of their
  embeddings is close to none of them; `"threshold"` leaves it out of the classifier and labels a pixel
  background when its top foreground probability, softmax(`logit_scale` * cosine) with `logit_scale` 40, is below
  `background_threshold` (default 0.1); `"none"` treats it as an ordinary class name;
- scoring: mIoU over classes present in ground truth or prediction, `ignore_index` (255) pixels skipped.
Metrics: `miou`, `pixel_acc`, `iou/<class>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from sfclip.eval.dense import score_dense, segmentation_metrics
from sfclip.eval.inference import check_device, evaluating
from sfclip.eval.prompts import ListSpec, load_classnames, load_templates, text_classifier
from sfclip.eval.segmentation_data import SegmentationSet, segmentation_dataset

__all__ = ["run", "DEFAULT_BACKGROUND_PROMPTS"]

# Our own choice: generic scene words, none of which is a VOC object class.
DEFAULT_BACKGROUND_PROMPTS = (
    "a photo of the background.", "a photo of the scenery.", "a photo of the sky.", "a photo of the ground.",
    "a photo of a wall.", "a photo of nothing in particular.",
)


def _threshold_labels(bg_index: int, threshold: float, logit_scale: float):
    def to_labels(logits: Tensor) -> Tensor:  # (C_fg, H, W) -> (H, W) labels in the full class list
        prob = (logit_scale * logits).softmax(0)
        top, fg = prob.max(0)
        labels = fg + (fg >= bg_index).long()  # foreground indices skip the background slot
        return torch.where(top < threshold, torch.full_like(labels, bg_index), labels)
    return to_labels


def run(model: nn.Module, tokenizer, data: str | Path | SegmentationSet, *, classnames: ListSpec,
        mean: Sequence[float], std: Sequence[float], image_size: int | None = None, layout: str = "folder",
        split: str | None = None, templates: ListSpec = "openai_imagenet", language: str | None = None,
        resize_short: int | None = 336, stride: int | None = None, background: str = "prompts",
        background_class: str = "background", background_prompts: Sequence[str] = DEFAULT_BACKGROUND_PROMPTS,
        background_threshold: float = 0.1, logit_scale: float = 40.0, ignore_index: int = 255,
        reduce_zero_label: bool | None = None, device: str | torch.device = "cpu", batch_size: int = 16,
        num_workers: int = 0, progress: bool = True, pictures_dir: str | Path | None = None,
        num_pictures: int = 4, readout: str = "plain") -> dict[str, float]:
    """Zero-shot mIoU of `model` on a segmentation set (protocol in the module docstring).

    data: a root in one of the `segmentation_data` layouts (`layout`, `split`) or a prepared set;
    classnames: one name per label index (a spec as in `prompts.load_classnames`).
    """
    if background not in ("prompts", "threshold", "none"):
        raise ValueError(f"background must be 'prompts', 'threshold' or 'none', got {background!r}")
    dev = check_device(model, device)
    names = load_classnames(classnames, language)
    prompts = load_templates(templates, language)
    dataset = data if isinstance(data, SegmentationSet) else segmentation_dataset(
        data, layout, split, reduce_zero_label, ignore_index)
    dataset.num_classes = len(names)
    window = image_size or int(model.visual.image_size)
    stride = stride or window // 2
    bg_index = names.index(background_class) if background_class in names else None
    text_names, to_labels, best_of = names, None, None
    if bg_index is not None and background in ("prompts", "threshold"):
        text_names = [n for i, n in enumerate(names) if i != bg_index]
    if bg_index is not None and background == "prompts":
        if not background_prompts:
            raise ValueError("background='prompts' needs at least one background prompt")
        best_of = list(background_prompts)
    elif bg_index is not None and background == "threshold":
        to_labels = _threshold_labels(bg_index, background_threshold, logit_scale)

    with evaluating(model):
        classifier = text_classifier(model, tokenizer, text_names, prompts, dev, progress=progress)  # (C', E)
        bg_rows = None if best_of is None else text_classifier(
            model, tokenizer, best_of, ["{c}"], dev, progress=progress)  # (K, E): one row per background prompt

        def dense_fn(crops: Tensor) -> Tensor:
            patches = model.encode_patches(crops, normalize=True, readout=readout).float()  # (B, h, w, E)
            patches = torch.nn.functional.normalize(patches, dim=-1)
            logits = torch.einsum("bhwe,ce->bchw", patches, classifier)  # (B, C', h, w)
            if bg_rows is None:
                return logits
            bg = torch.einsum("bhwe,ke->bkhw", patches, bg_rows).amax(1, keepdim=True)  # (B, 1, h, w): the best
            return torch.cat([logits[:, :bg_index], bg, logits[:, bg_index:]], dim=1)  # (B, C, h, w)

        result = score_dense(dense_fn, dataset, len(names), mean, std, window, stride, resize_short, dev,
                             ignore_index, batch_size, num_workers, progress, to_labels,
                             keep_examples=num_pictures if pictures_dir is not None else 0)
    if pictures_dir is not None:
        from sfclip.eval.pictures import save_segmentation_example

        for i, (image01, gt, pred) in enumerate(result.examples):
            save_segmentation_example(Path(pictures_dir) / f"zeroshot_seg_{i:02d}.png", image01, gt, pred,
                                      names, ignore_index)
    return segmentation_metrics(result.confusion, names)
