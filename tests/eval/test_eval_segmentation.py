"""Dense evaluation: sliding windows, the segmentation layouts, zero-shot and linear segmentation runners.

Images are stripes of colour aligned to the oracle's 8-pixel patch grid. Bilinear upsampling
(align_corners=False) of one-hot patch logits gives every pixel more than half the weight of its own
patch along the varying axis, so the oracle reproduces the mask exactly and must score 1.0. (Stripes,
not a checkerboard: at a corner of four patches the own patch's weight can drop below a neighbour class's.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fixtures import NAMES, ColourOracle, block_image, save_mask

from sfclip.eval import dense, evaluate, linear_segmentation, segmentation
from sfclip.eval.images import CLIP_MEAN, CLIP_STD
from sfclip.eval.segmentation_data import segmentation_dataset

CLASSES = ["red", "green", "blue"]
TEMPLATES = ["a photo of the {c} ."]
ARGS = dict(mean=CLIP_MEAN, std=CLIP_STD, templates=TEMPLATES, progress=False)
rng = np.random.default_rng(0)


def labels_grid(h: int, w: int, classes=(0, 1, 2)) -> np.ndarray:
    """Random stripes of classes, vertical or horizontal, on an (h, w) block grid."""
    if rng.random() < 0.5:
        return np.repeat(rng.choice(np.array(classes), size=(1, w)), h, axis=0)
    return np.repeat(rng.choice(np.array(classes), size=(h, 1)), w, axis=1)


def write_pair(root, stem, grid, block=8, image_dir="images", mask_dir="masks", ext="png", mask_fn=None):
    img, mask = block_image(grid, block)
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    img.save(root / image_dir / f"{stem}.{ext}", **({"quality": 95} if ext == "jpg" else {}))
    save_mask(mask_fn(mask) if mask_fn else mask, root / mask_dir / f"{stem}.png", palette_png=ext == "jpg")
    return mask


def test_window_starts():
    assert dense.window_starts(20, 32, 16) == [0]
    assert dense.window_starts(64, 32, 16) == [0, 16, 32]
    assert dense.window_starts(70, 32, 16) == [0, 16, 32, 38]  # the last flush with the edge
    assert dense.window_starts(64, 32, 32) == [0, 32]


@pytest.mark.parametrize("size", [(50, 70), (20, 26)])  # larger than the window, and smaller (padded)
def test_sliding_window_reassembles_the_image(size):
    # an identity dense head at half resolution: averaged, upsampled windows must give back a smooth image
    gen = torch.Generator().manual_seed(0)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, size[0] // 5, size[1] // 5, generator=gen),
                                            size=size, mode="bilinear", align_corners=False)[0]
    calls = []

    def identity(crops):
        calls.append(crops.shape)
        return crops  # (B, 3, S, S): "logits" equal to the pixels

    out = dense.sliding_logits(identity, image, window=32, stride=12, batch_size=4)
    torch.testing.assert_close(out, image)
    assert all(shape[-2:] == (32, 32) for shape in calls)
    if size == (50, 70):
        expected = len(dense.window_starts(50, 32, 12)) * len(dense.window_starts(70, 32, 12))
        assert sum(s[0] for s in calls) == expected


def test_sliding_window_averages_overlaps():
    # each window answers a constant equal to its x offset: pixels covered by windows at 0 and 16 get 8
    offsets = iter([0.0, 16.0])

    def const(crops):
        return torch.full((crops.shape[0], 1, 4, 4), next(offsets))

    out = dense.sliding_logits(const, torch.zeros(3, 32, 48), window=32, stride=16, batch_size=1)
    assert out[0, 0, 0] == 0 and out[0, 0, 20] == 8 and out[0, 0, 40] == 16


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "seg"
    # 48 x 64 images: larger than the 32 window -> 2 x 3 windows at stride 16
    for i in range(3):
        write_pair(root, f"im{i}", labels_grid(6, 8))
    # a yellow block (a colour no class names) marked ignore: it would count as an error if scored
    grid = np.repeat(labels_grid(1, 8), 6, axis=0)  # vertical stripes
    grid[:, 2] = NAMES.index("yellow")
    write_pair(root, "ignored", grid, mask_fn=lambda m: np.where(m == NAMES.index("yellow"), 255, m))
    return root


def test_zeroshot_oracle_scores_one_with_sliding_window(folder, tok):
    out = segmentation.run(ColourOracle(tok), tok, folder, classnames=CLASSES, resize_short=None, stride=16,
                           **ARGS)
    assert out["miou"] == 1.0 and out["pixel_acc"] == 1.0
    assert {k for k in out if k.startswith("iou/")} == {f"iou/{c}" for c in CLASSES}
    wrong = segmentation.run(ColourOracle(tok, shift=1), tok, folder, classnames=CLASSES, resize_short=None,
                             stride=16, **ARGS)
    assert wrong["miou"] < 0.5


def test_ignored_pixels_would_count(folder, tok):
    # the same data with ignore_index switched off reads 255 as a label outside the classes: refused
    with pytest.raises(ValueError, match="outside"):
        segmentation.run(ColourOracle(tok), tok, folder, classnames=CLASSES, resize_short=None,
                         ignore_index=254, **ARGS)


def test_resize_short_side_first(tmp_path, tok):
    # 24 x 32 images in 4-pixel blocks; resized x2 they align with the 8-pixel patches
    for i in range(2):
        write_pair(tmp_path, f"im{i}", labels_grid(6, 8), block=4)
    out = segmentation.run(ColourOracle(tok), tok, tmp_path, classnames=CLASSES, resize_short=48, stride=16,
                           **ARGS)
    assert out["miou"] == 1.0


def test_voc_layout_with_split_list_and_palette_masks(tmp_path, tok):
    stems = ["2007_000001", "2007_000002", "2007_000003"]
    for s in stems:
        write_pair(tmp_path, s, labels_grid(4, 6), image_dir="JPEGImages", mask_dir="SegmentationClass",
                   ext="jpg")
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems[:2]) + "\n")
    assert len(segmentation_dataset(tmp_path, "voc", "val")) == 2
    assert len(segmentation_dataset(tmp_path, "voc")) == 3
    out = segmentation.run(ColourOracle(tok), tok, tmp_path, classnames=CLASSES, layout="voc", split="val",
                           resize_short=None, **ARGS)
    assert out["miou"] == 1.0


def test_ade20k_layout_reduces_zero_label(tmp_path, tok):
    grid = np.repeat(labels_grid(4, 1), 4, axis=1)  # horizontal stripes
    # stored with 0 = "other" and classes from 1; an "other" stripe has a colour no class names
    grid[0, :] = NAMES.index("yellow")
    mask = write_pair(tmp_path, "ADE_val_1", grid, image_dir="images/validation",
                      mask_dir="annotations/validation",
                      mask_fn=lambda m: np.where(m == NAMES.index("yellow"), 0, m + 1))
    image, stored = segmentation_dataset(tmp_path, "ade20k", "validation")[0]
    assert image.shape == (3, 32, 32)
    assert (stored == torch.from_numpy(np.where(mask == NAMES.index("yellow"), 255, mask))).all()
    out = segmentation.run(ColourOracle(tok), tok, tmp_path, classnames=CLASSES, layout="ade20k",
                           split="validation", resize_short=None, **ARGS)
    assert out["miou"] == 1.0


def bg_folder(tmp_path):
    """Classes background (black), red, green; one all-background image and one red/green image, so no
    pixel is interpolated between background and a foreground patch."""
    to_labels = lambda m: np.select([m == NAMES.index("black"), m == 0], [0, 1], 2)  # noqa: E731
    write_pair(tmp_path, "im0", np.full((4, 4), NAMES.index("black")), mask_fn=to_labels)
    write_pair(tmp_path, "im1", labels_grid(4, 4, classes=(0, 1)), mask_fn=to_labels)
    return ["background", "red", "green"]


def test_background_with_its_own_prompts(tmp_path, tok):
    names = bg_folder(tmp_path)
    # the oracle reads "background" as black; prompts naming red instead show that they are used
    kw = dict(classnames=names, resize_short=None, **ARGS)
    assert segmentation.run(ColourOracle(tok), tok, tmp_path, background_prompts=["the background ."],
                            **kw)["miou"] == 1.0
    wrong = segmentation.run(ColourOracle(tok), tok, tmp_path, background_prompts=["the red ."], **kw)
    assert wrong["miou"] < 1.0


def test_background_prompts_are_rows_of_their_own(tmp_path, tok, monkeypatch):
    """Each background prompt is scored on its own and the best one taken, not their mean embedding."""
    names = bg_folder(tmp_path)
    kw = dict(classnames=names, resize_short=None, **ARGS)
    seen = {}
    real = segmentation.score_dense

    def spy(dense_fn, *args, **kwargs):
        crop = torch.zeros(1, 3, 16, 16)  # any crop: the rows are compared with each other below
        seen["logits"] = dense_fn(crop)
        return real(dense_fn, *args, **kwargs)

    monkeypatch.setattr(segmentation, "score_dense", spy)
    two = segmentation.run(ColourOracle(tok), tok, tmp_path, background_prompts=["the blue .", "the background ."],
                           **kw)
    assert two["miou"] == 1.0  # an unrelated extra background does not dilute the right one
    logits = seen["logits"]  # (1, 3, h, w)
    one = {}
    for p in ("the blue .", "the background ."):
        segmentation.run(ColourOracle(tok), tok, tmp_path, background_prompts=[p], **kw)
        one[p] = seen["logits"][:, 0]
    torch.testing.assert_close(logits[:, 0], torch.maximum(one["the blue ."], one["the background ."]))
    torch.testing.assert_close(logits[:, 1:], seen["logits"][:, 1:])  # the objects' rows are unchanged


def test_background_by_threshold(tmp_path, tok):
    names = bg_folder(tmp_path)
    # black patches match no foreground class: uniform probabilities (1/2) fall below the threshold
    kw = dict(classnames=names, resize_short=None, background="threshold", **ARGS)
    assert segmentation.run(ColourOracle(tok), tok, tmp_path, background_threshold=0.9, **kw)["miou"] == 1.0
    assert segmentation.run(ColourOracle(tok), tok, tmp_path, background_threshold=0.0, **kw)["miou"] < 1.0


def test_patch_targets_majority():
    masks = torch.tensor([[[0, 0, 1, 1],
                           [0, 1, 1, 1],
                           [255, 255, 2, 2],
                           [255, 0, 2, 2]]])
    assert linear_segmentation.patch_targets(masks, (2, 2), 3).tolist() == [[[0, 1], [255, 2]]]


@pytest.fixture
def splits(tmp_path):
    for i in range(4):  # 32 x 32 training images: one window each
        write_pair(tmp_path, f"tr{i}", labels_grid(4, 4), image_dir="images/train", mask_dir="masks/train")
    for i in range(2):  # 32 x 48 test images: two overlapping windows
        write_pair(tmp_path, f"te{i}", labels_grid(4, 6), image_dir="images/val", mask_dir="masks/val")
    return tmp_path


@pytest.mark.parametrize("target", ["patch", "pixel"])
def test_linear_segmentation_oracle_scores_one(splits, tok, target):
    kw = dict(classnames=CLASSES, mean=CLIP_MEAN, std=CLIP_STD, target=target, epochs=40, lr=0.1, stride=16,
              progress=False)
    out = evaluate("linear_segmentation", ColourOracle(tok), tok, data=splits, **kw)
    assert out["miou"] == 1.0
    useless = linear_segmentation.run(ColourOracle(tok, constant=True), tok, splits, **kw)
    assert useless["miou"] < 0.5


def test_segmentation_pictures(folder, tok, tmp_path):
    pytest.importorskip("matplotlib")
    segmentation.run(ColourOracle(tok), tok, folder, classnames=CLASSES, resize_short=None,
                     pictures_dir=tmp_path / "pics", num_pictures=2, **ARGS)
    names = sorted(p.name for p in (tmp_path / "pics").iterdir())
    assert names == ["zeroshot_seg_00.png", "zeroshot_seg_01.png"]
