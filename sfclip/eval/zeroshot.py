"""Zero-shot image classification (CLIP protocol).

Each class's weight is the renormalized mean of the normalized text embeddings of its prompts (class
name put into every template); an image is assigned the class of highest cosine similarity. Metrics:
`acc1`, `acc5` (when there are at least 5 classes) and `mean_per_class_recall` (top-1 recall averaged
over the classes present). Ties count against the model (see `metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from sfclip.eval import metrics
from sfclip.eval.classification_data import LabeledImages, classification_dataset
from sfclip.eval.inference import check_device, evaluating, make_loader
from sfclip.eval.prompts import ListSpec, load_classnames, load_templates, text_classifier

__all__ = ["run", "classify"]


def classify(model: nn.Module, loader, classifier: Tensor, device: torch.device,
             progress: bool = True) -> tuple[Tensor, Tensor]:
    """Logits (N, C) = cosine(image embedding, class weights) and labels (N,), on the CPU."""
    logits, labels = [], []
    for images, y in tqdm(loader, desc="zero-shot", disable=not progress, leave=False):
        emb = F.normalize(model.encode_image(images.to(device), normalize=True).float(), dim=-1)  # (B, E)
        logits.append((emb @ classifier.T).cpu())  # (B, C)
        labels.append(torch.as_tensor(y))
    return torch.cat(logits), torch.cat(labels)


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """acc1, acc5 (C >= 5) and mean_per_class_recall."""
    ks = (1, 5) if logits.shape[1] >= 5 else (1,)
    acc = metrics.accuracy(logits, labels, ks)
    out = {f"acc{k}": v for k, v in acc.items()}
    out["mean_per_class_recall"] = metrics.mean_per_class_recall(logits, labels)
    return out


def run(model: nn.Module, tokenizer, data: str | Path | Sequence[str] | LabeledImages, *,
        transform: Callable[[Image.Image], Tensor], classnames: ListSpec | None = None,
        templates: ListSpec = "openai_imagenet", language: str | None = None, data_format: str = "auto",
        class_prompts: Mapping[str, Sequence[str]] | None = None, allow_unused_classnames: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 64, num_workers: int = 0, progress: bool = True,
        pictures_dir: str | Path | None = None, num_pictures: int = 8) -> dict[str, float]:
    """Zero-shot classification accuracy of `model` on `data`.

    data: a path in one of the `classification_data` layouts (or a prepared `LabeledImages`).
    classnames / templates: specs resolved by `prompts.load_classnames` / `load_templates` (a built-in
    name, a file, a list, or a dict language -> list picked by `language`); classnames default to the
    dataset's own (folder names / CSV label names). Labels given as indices that stop short of the last
    class name are refused (a names file of another dataset would silently add distractor classes) unless
    `allow_unused_classnames`. Returns acc1, acc5 (>= 5 classes),
    mean_per_class_recall. With `pictures_dir`, writes a grid of the first images with their labels.
    """
    dev = check_device(model, device)
    names = load_classnames(classnames, language) if classnames is not None else None
    dataset = data if isinstance(data, LabeledImages) else classification_dataset(data, names, data_format)
    names = names if names is not None else dataset.classnames
    if len(names) != len(dataset.classnames):
        raise ValueError(f"{len(names)} class names for a dataset with {len(dataset.classnames)} classes")
    top = max(dataset.labels) + 1
    if dataset.indexed and top < len(names) and not allow_unused_classnames:
        where = "" if isinstance(data, LabeledImages) else f" in {data}"
        named = f" ({classnames})" if isinstance(classnames, (str, Path)) else ""
        raise ValueError(f"{len(names)} class names{named} but the labels{where} only go up to {top - 1}, so "
                         f"{len(names) - top} names are no image's class (names of another dataset?); pass "
                         "the matching class names, or set allow_unused_classnames (--arg "
                         "allow_unused_classnames=true) to score against all of them")
    dataset.transform = transform
    prompts = load_templates(templates, language)
    with evaluating(model):
        classifier = text_classifier(model, tokenizer, names, prompts, dev, class_prompts,
                                     progress=progress)  # (C, E)
        logits, labels = classify(model, make_loader(dataset, batch_size, num_workers), classifier, dev,
                                  progress)
    if pictures_dir is not None:
        from sfclip.eval.pictures import save_classification_examples

        n = min(num_pictures, len(dataset))
        save_classification_examples(Path(pictures_dir) / "zeroshot_examples.png",
                                     [dataset.image(i) for i in range(n)],
                                     [names[int(t)] for t in labels[:n]],
                                     [names[int(p)] for p in logits[:n].argmax(1)])
    return classification_metrics(logits, labels)
