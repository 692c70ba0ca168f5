"""PNG pictures of evaluation results: segmentation overlays, retrieval examples, classified images.

matplotlib is optional (`pip install matplotlib`, part of the `demo` extra); it is imported only when a
picture is drawn. Figures are built without pyplot, so drawing never touches global GUI state.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

__all__ = ["palette", "save_segmentation_example", "save_retrieval_example", "save_classification_examples"]

IGNORE_COLOUR = (224, 224, 192)  # VOC's boundary colour


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("pictures need matplotlib: pip install matplotlib (or sfclip[demo])") from e
    return Figure(figsize=(width, height), dpi=100)


def palette(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 colours, the Pascal VOC bit-interleaved palette (class 0 black, 1 dark red, ...)."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for c in range(num_classes):
        label, r, g, b = c, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (label & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        colours[c] = (r, g, b)
    return colours


def _colourize(labels: Tensor, colours: np.ndarray, ignore_index: int) -> np.ndarray:
    lab = labels.cpu().numpy()
    out = np.empty((*lab.shape, 3), dtype=np.uint8)
    out[:] = IGNORE_COLOUR
    valid = (lab != ignore_index) & (lab >= 0) & (lab < len(colours))
    out[valid] = colours[lab[valid]]
    return out


def save_segmentation_example(path: str | Path, image01: Tensor, gt: Tensor, pred: Tensor,
                              classnames: Sequence[str], ignore_index: int = 255, alpha: float = 0.6) -> Path:
    """Write image | ground truth | prediction (labels blended over the greyed image) with a class legend."""
    from matplotlib.patches import Patch

    colours = palette(len(classnames))
    img = (image01.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).astype(np.float32)  # (H, W, 3)
    # Labels are blended over a grey copy of the image, so every hue in an overlay comes from the palette.
    grey = np.repeat(img @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32), 3, axis=2)
    h, w = img.shape[:2]
    fig = _figure(12, 4.6 * h / w + 0.8)
    panels = [("image", img), ("ground truth", _colourize(gt, colours, ignore_index)),
              ("prediction", _colourize(pred, colours, ignore_index))]
    for i, (title, arr) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        shown = arr if i == 0 else (1 - alpha) * grey + alpha * arr
        ax.imshow(shown.astype(np.uint8))
        ax.set_title(title)
        ax.axis("off")
    present = sorted(set(gt.unique().tolist()) | set(pred.unique().tolist()))
    handles = [Patch(color=colours[c] / 255, label=classnames[c])
               for c in present if 0 <= c < len(classnames)]
    if ignore_index in present:
        handles.append(Patch(color=np.array(IGNORE_COLOUR) / 255, label="ignored"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    return _save(fig, path)


def save_retrieval_example(path: str | Path, caption: str, images: Sequence[Image.Image],
                           correct: Sequence[bool]) -> Path:
    """Write a caption query and its top-k images in rank order, correct images outlined in green."""
    fig = _figure(2.6 * len(images), 3.4)
    fig.suptitle("\n".join(textwrap.wrap(caption, 110)), fontsize=9)
    for i, (img, ok) in enumerate(zip(images, correct, strict=True)):
        ax = fig.add_subplot(1, len(images), i + 1)
        ax.imshow(np.asarray(img.convert("RGB")))
        ax.set_title(f"#{i + 1}" + (" (correct)" if ok else ""), fontsize=9, color="green" if ok else "black")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(ok)
            spine.set_color("limegreen")
            spine.set_linewidth(5)
    return _save(fig, path)


def save_classification_examples(path: str | Path, images: Sequence[Image.Image], true: Sequence[str],
                                 pred: Sequence[str], columns: int = 4) -> Path:
    """Write a grid of images titled with their true and predicted class (green right, red wrong)."""
    rows = max(1, -(-len(images) // columns))
    fig = _figure(3 * columns, 3.2 * rows)
    for i, (img, t, p) in enumerate(zip(images, true, pred, strict=True)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(np.asarray(img.convert("RGB")))
        ax.set_title(f"true: {t}\npred: {p}", fontsize=8, color="green" if t == p else "red")
        ax.axis("off")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path

