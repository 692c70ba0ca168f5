"""Linear probe: multinomial logistic regression on frozen image features.

Protocol: features are the normalized `encode_image` embedding (`feature="pooled"`),
`forward_features(...)["cls"]` (`feature="cls"`) or the mean of its patch tokens (`feature="mean_patch"`,
what per-patch distillation trains), standardized with the training statistics. The L2
weight decay is picked from `weight_decays` by top-1 accuracy on a stratified validation split carved
from the training set (`val_fraction`; on ties the strongest decay wins), then the probe is refit on
train + val and scored on the test set. Fitting is full-batch L-BFGS in torch on `device`.
Metrics: `acc1`, `acc5` (>= 5 classes), `mean_per_class_recall`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from sfclip.eval.classification_data import LabeledImages, classification_dataset
from sfclip.eval.inference import check_device, evaluating, make_loader
from sfclip.eval.prompts import ListSpec, load_classnames
from sfclip.eval.zeroshot import classification_metrics

__all__ = ["run", "probe_logits", "extract_features", "fit_logistic", "stratified_split", "DEFAULT_WEIGHT_DECAYS"]

log = logging.getLogger(__name__)

FEATURES = ("pooled", "cls", "mean_patch")
DEFAULT_WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def extract_features(model: nn.Module, loader, device: torch.device, feature: str = "pooled",
                     progress: bool = True) -> tuple[Tensor, Tensor]:
    """Frozen features (N, D) float32 and labels (N,), on `device`; call inside `evaluating(model)`."""
    feats, labels = [], []
    for images, y in tqdm(loader, desc=f"features ({feature})", disable=not progress, leave=False):
        images = images.to(device)
        if feature == "pooled":
            f = model.encode_image(images, normalize=True)  # (B, E)
        elif feature == "cls":
            f = model.forward_features(images)["cls"]  # (B, D)
        elif feature == "mean_patch":  # what patch-level (dense) distillation trains
            f = model.forward_features(images)["patch"].mean(1)  # (B, D)
        else:
            raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
        feats.append(f.float())
        labels.append(torch.as_tensor(y, device=device))
    return torch.cat(feats), torch.cat(labels)


def stratified_split(labels: Tensor, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices (train, val): about `val_fraction` of each class to val, at least one left in train."""
    gen = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    train, val = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = min(round(len(idx) * val_fraction), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def fit_logistic(x: Tensor, y: Tensor, num_classes: int, weight_decay: float,
                 max_iter: int = 1000) -> tuple[Tensor, Tensor]:
    """Weights (D, C) and bias (C,) minimizing mean cross-entropy + weight_decay * ||W||^2 (L-BFGS)."""
    w = torch.zeros(x.shape[1], num_classes, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _standardize(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant features carry no signal
    return [(t - mean) / std for t in (train, *others)]


def _dataset(data, names, data_format: str) -> LabeledImages:
    return data if isinstance(data, LabeledImages) else classification_dataset(data, names, data_format)


def run(model: nn.Module, tokenizer, train_data: str | Path | Sequence[str] | LabeledImages,
        test_data: str | Path | Sequence[str] | LabeledImages, *, transform: Callable[[Image.Image], Tensor],
        classnames: ListSpec | None = None, data_format: str = "auto", feature: str = "pooled",
        weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, val_fraction: float = 0.2,
        max_iter: int = 1000, seed: int = 0, device: str | torch.device = "cpu", batch_size: int = 64,
        num_workers: int = 0, progress: bool = True, pictures_dir: str | Path | None = None,
        num_pictures: int = 8) -> dict[str, float]:
    """Linear-probe accuracy (protocol in the module docstring); `tokenizer` is unused (uniform API).

    train_data / test_data: `classification_data` layouts (or prepared `LabeledImages`) sharing classes.
    """
    logits, y_test = probe_logits(model, train_data, test_data, transform=transform, classnames=classnames,
                                  data_format=data_format, feature=feature, weight_decays=weight_decays,
                                  val_fraction=val_fraction, max_iter=max_iter, seed=seed, device=device,
                                  batch_size=batch_size, num_workers=num_workers, progress=progress,
                                  pictures_dir=pictures_dir, num_pictures=num_pictures)
    return classification_metrics(logits, y_test)


def probe_logits(model: nn.Module, train_data: str | Path | Sequence[str] | LabeledImages,
                 test_data: str | Path | Sequence[str] | LabeledImages, *, transform: Callable[[Image.Image], Tensor],
                 classnames: ListSpec | None = None, data_format: str = "auto", feature: str = "pooled",
                 weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, val_fraction: float = 0.2,
                 max_iter: int = 1000, seed: int = 0, device: str | torch.device = "cpu", batch_size: int = 64,
                 num_workers: int = 0, progress: bool = True, pictures_dir: str | Path | None = None,
                 num_pictures: int = 8) -> tuple[Tensor, Tensor]:
    """The fitted probe's test logits (N, C) and the test labels (N,), on the CPU: what `run` scores, kept
    per image (e.g. for a bootstrap over test images)."""
    if not weight_decays:
        raise ValueError("weight_decays must not be empty")
    dev = check_device(model, device)
    names = load_classnames(classnames) if classnames is not None else None
    train_set, test_set = _dataset(train_data, names, data_format), _dataset(test_data, names, data_format)
    if train_set.classnames != test_set.classnames:
        raise ValueError("train and test sets have different classes; pass classnames")
    num_classes = len(train_set.classnames)
    train_set.transform = test_set.transform = transform
    with evaluating(model):
        x_all, y_all = extract_features(model, make_loader(train_set, batch_size, num_workers), dev, feature,
                                        progress)
        x_test, y_test = extract_features(model, make_loader(test_set, batch_size, num_workers), dev, feature,
                                          progress)
    # Inference tensors cannot enter autograd; clones made outside inference mode can.
    x_all, y_all, x_test, y_test = (t.clone() for t in (x_all, y_all, x_test, y_test))

    best = weight_decays[0]
    if len(weight_decays) > 1:
        tr, va = stratified_split(y_all, val_fraction, seed)
        if len(va) == 0:
            raise ValueError("the training set is too small to carve a validation split; "
                             "pass a single weight decay")
        x_tr, x_va = _standardize(x_all[tr.to(dev)], x_all[va.to(dev)])
        best_acc = -1.0
        for wd in sorted(weight_decays):
            w, b = fit_logistic(x_tr, y_all[tr.to(dev)], num_classes, wd, max_iter)
            acc = ((x_va @ w + b).argmax(1) == y_all[va.to(dev)]).float().mean().item()
            log.info("linear probe: weight_decay=%g val acc1=%.4f", wd, acc)
            if acc >= best_acc:
                best, best_acc = wd, acc
    x_all, x_test = _standardize(x_all, x_test)
    w, b = fit_logistic(x_all, y_all, num_classes, best, max_iter)
    logits = (x_test @ w + b).cpu()  # (N, C)
    log.info("linear probe: refit with weight_decay=%g", best)
    if pictures_dir is not None:
        from sfclip.eval.pictures import save_classification_examples

        n = min(num_pictures, len(test_set))
        cn = test_set.classnames
        save_classification_examples(Path(pictures_dir) / "linear_probe_examples.png",
                                     [test_set.image(i) for i in range(n)], [cn[int(t)] for t in y_test[:n]],
                                     [cn[int(p)] for p in logits[:n].argmax(1)])
    return logits, y_test.cpu()
