"""Pure evaluation metrics on tensors: accuracy, per-class recall, retrieval recall@k, mIoU.

No data plumbing and no model here: every function takes scores or predictions and returns numbers, so
each can be tested on hand-built inputs. Ties are always counted against the model (an item ranked
level with the correct one counts as ranked above it), so a model that outputs constants scores
zero rather than a lucky tie-break, and chunked and unchunked computations agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "target_ranks", "accuracy", "mean_per_class_recall", "retrieval_ranks", "recall_at_k",
    "confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy",
]


def target_ranks(logits: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of each target class among the logits, ties counted against the model.

    logits (N, C), targets (N,) -> (N,) long: the number of other classes scoring >= the target.
    """
    true = logits.gather(1, targets[:, None].long())  # (N, 1)
    return (logits >= true).sum(1) - 1


def accuracy(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy for each k: the fraction of rows whose target ranks within the first k."""
    ranks = target_ranks(logits, targets)
    return {k: (ranks < k).double().mean().item() for k in ks}


def mean_per_class_recall(logits: Tensor, targets: Tensor) -> float:
    """Top-1 recall averaged over the classes that occur in `targets` (absent classes are skipped)."""
    hit = (target_ranks(logits, targets) == 0).double().cpu()  # (N,)
    num_classes = logits.shape[1]
    targets = targets.long().cpu()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, targets, hit)
    counts = torch.bincount(targets, minlength=num_classes).double()
    present = counts > 0
    return (hits[present] / counts[present]).mean().item()


def retrieval_ranks(image_emb: Tensor, text_emb: Tensor, text_to_image: Tensor,
                    chunk_size: int = 1024, text_groups: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Rank of the first correct item for every query, in both directions, computed in chunks.

    image_emb (Ni, E), text_emb (Nt, E); text_to_image (Nt,) gives each caption's image index; every
    image needs at least one caption. Returns (i2t (Ni,), t2i (Nt,)) 0-based ranks:
    i2t: the number of non-positive captions scoring >= the image's best positive caption (a hit at k if
    any positive is in the top k); t2i: the number of non-positive images scoring >= the best positive image.
    Without `text_groups` the positives are the image's own captions (t2i: the caption's own image), as
    CLIP_benchmark counts them; a tie with the best positive is a miss. `text_groups` (Nt,) gives captions
    with the same text the same id: a caption whose text equals one of the image's own captions is then
    a positive too (i2t), and so is every image that has the query's text among its captions (t2i).
    Only chunk_size x max(Ni, Nt) similarities exist at once; the result does not depend on it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    num_images = image_emb.shape[0]
    dev = image_emb.device
    text_to_image = text_to_image.to(dev).long()
    if torch.bincount(text_to_image, minlength=num_images).min() == 0:
        raise ValueError("every image needs at least one caption for image->text recall")
    groups = torch.arange(len(text_to_image), device=dev) if text_groups is None else text_groups.to(dev).long()
    # has[i, g]: image i has a caption of text group g
    has = torch.zeros(num_images, int(groups.max()) + 1, dtype=torch.bool, device=dev)
    has[text_to_image, groups] = True
    i2t = torch.empty(num_images, dtype=torch.long, device=dev)
    for start in range(0, num_images, chunk_size):
        sim = image_emb[start:start + chunk_size] @ text_emb.T  # (c, Nt)
        positive = has[start:start + sim.shape[0]][:, groups]  # (c, Nt)
        # The best positive decides the hit, so it is compared against the non-positive captions only.
        best = sim.masked_fill(~positive, float("-inf")).amax(1, keepdim=True)  # (c, 1)
        i2t[start:start + sim.shape[0]] = ((sim >= best) & ~positive).sum(1)
    t2i = torch.empty(text_emb.shape[0], dtype=torch.long, device=dev)
    for start in range(0, text_emb.shape[0], chunk_size):
        sim = text_emb[start:start + chunk_size] @ image_emb.T  # (c, Ni)
        positive = has[:, groups[start:start + sim.shape[0]]].T  # (c, Ni)
        best = sim.masked_fill(~positive, float("-inf")).amax(1, keepdim=True)  # (c, 1)
        t2i[start:start + sim.shape[0]] = ((sim >= best) & ~positive).sum(1)
    return i2t.cpu(), t2i.cpu()


def oracle_retrieval_ranks(text_to_image: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """The best ranks any model reaches under the index rule of `retrieval_ranks` (a tie with the best
    positive is a miss) when captions with equal text (`groups`, (Nt,)) get equal embeddings, so equal scores
    from every image: (i2t (Ni,), t2i (Nt,)).

    i2t: an image's score of a caption depends on the text alone, so each copy of one of its texts held by
    another image ties with its own; the best it can do is rank first the text with the fewest copies
    elsewhere: rank = that number. t2i: the images holding one text can be put in any order, but in one order
    for all its copies; the caption of the j-th holder ranks j.
    """
    text_to_image, groups = text_to_image.long().cpu(), groups.long().cpu()
    num_images = int(text_to_image.max()) + 1
    holders: dict[int, list[int]] = {}
    for g, img in zip(groups.tolist(), text_to_image.tolist()):
        if img not in holders.setdefault(g, []):
            holders[g].append(img)
    i2t = torch.full((num_images,), len(groups), dtype=torch.long)
    for imgs in holders.values():
        for img in imgs:
            i2t[img] = min(int(i2t[img]), len(imgs) - 1)
    t2i = torch.tensor([holders[g].index(img) for g, img in zip(groups.tolist(), text_to_image.tolist())],
                       dtype=torch.long)
    return i2t, t2i


def text_groups(texts: Sequence[str]) -> Tensor:
    """(Nt,) ids, equal for captions whose text is the same after stripping outer whitespace."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(t.strip(), len(ids)) for t in texts], dtype=torch.long)


def recall_at_k(ranks: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose first correct item ranks within the first k, for each k."""
    return {k: (ranks < k).double().mean().item() for k in ks}


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """(C, C) int64 counts, rows = ground truth, columns = prediction; `ignore_index` pixels skipped.

    Ground-truth values outside [0, C) other than `ignore_index` are an error (a wrong label map).
    """
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = target != ignore_index
    pred, target = pred[valid], target[valid]
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"ground-truth label {int(target.max())} outside [0, {num_classes}) "
                         f"(and not the ignore index {ignore_index})")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted label outside [0, {num_classes})")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def iou_per_class(conf: Tensor) -> Tensor:
    """(C,) float64 IoU per class; NaN for classes absent from both ground truth and prediction."""
    conf = conf.double()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(conf: Tensor) -> float:
    """Mean IoU over the classes present in ground truth or prediction."""
    iou = iou_per_class(conf)
    present = ~iou.isnan()
    return iou[present].mean().item() if present.any() else float("nan")


def pixel_accuracy(conf: Tensor) -> float:
    """Fraction of counted (non-ignored) pixels predicted correctly."""
    total = conf.sum()
    return (conf.diagonal().sum() / total).item() if total > 0 else float("nan")
