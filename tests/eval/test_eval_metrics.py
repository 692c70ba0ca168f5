"""Metric functions on hand-built inputs with known answers, and chunked retrieval vs a plain reference."""

from __future__ import annotations

import math

import pytest
import torch

from sfclip.eval import metrics


def test_accuracy_top1_top5():
    logits = torch.tensor([
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # target 0: rank 0
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # target 5: rank 5 -> miss at 5
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # target 1: rank 4 -> hit at 5
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # target 2: rank 0
    ])
    targets = torch.tensor([0, 5, 1, 2])
    acc = metrics.accuracy(logits, targets, (1, 5))
    assert acc[1] == pytest.approx(0.5)
    assert acc[5] == pytest.approx(0.75)


def test_ties_count_against_the_model():
    logits = torch.zeros(4, 3)  # a constant model
    acc = metrics.accuracy(logits, torch.tensor([0, 1, 2, 0]), (1, 2, 3))
    assert acc == {1: 0.0, 2: 0.0, 3: 1.0}


def test_mean_per_class_recall_weights_classes_equally():
    # class 0: 3 samples all right; class 1: 1 sample wrong; class 2: never a target (skipped)
    logits = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    targets = torch.tensor([0, 0, 0, 1])
    assert metrics.accuracy(logits, targets, (1,))[1] == pytest.approx(0.75)
    assert metrics.mean_per_class_recall(logits, targets) == pytest.approx(0.5)


def test_recall_with_several_captions_per_image():
    # 3 images, 2 captions each: image 1's FIRST caption is far off, only its SECOND matches
    image = torch.eye(3)
    text = torch.tensor([
        [1.0, 0, 0], [0.9, 0.1, 0],  # image 0
        [0, 0, 1.0], [0, 1.0, 0],  # image 1: caption 0 points at image 2, caption 1 is right
        [0, 0, 1.0], [0.5, 0.5, 0],  # image 2
    ])
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    i2t, t2i = metrics.retrieval_ranks(image, text, owner)
    # image 1's best caption (index 3, score 1) is beaten by no other image's caption -> rank 0
    assert i2t.tolist() == [0, 0, 1]  # image 2: its caption 4 ties with image 1's caption 2 -> counted above
    assert metrics.recall_at_k(i2t, (1, 2)) == {1: pytest.approx(2 / 3), 2: 1.0}
    # caption 2 belongs to image 1 (score 0) but image 2 scores 1 and image 0 ties at 0 -> rank 2;
    # caption 5 belongs to image 2 (score 0) and images 0 and 1 score 0.5 -> rank 2
    assert t2i.tolist() == [0, 0, 2, 0, 0, 2]


def _reference_ranks(image, text, owner):
    """Plain sort-based reference: ties broken against the correct items."""
    sim = image @ text.T  # (Ni, Nt)
    i2t = []
    for i in range(len(image)):
        positive = owner == i
        # sort by score, then negatives before positives at equal score
        order = sorted(range(len(text)), key=lambda j: (-sim[i, j].item(), bool(positive[j])))
        i2t.append(next(r for r, j in enumerate(order) if positive[j]))
    t2i = []
    for j in range(len(text)):
        order = sorted(range(len(image)), key=lambda i: (-sim[i, j].item(), i == owner[j]))
        t2i.append(order.index(int(owner[j])))
    return torch.tensor(i2t), torch.tensor(t2i)


@pytest.mark.parametrize("ties", [False, True])
def test_chunked_retrieval_matches_reference(ties):
    gen = torch.Generator().manual_seed(0)
    n_img, n_txt, dim = 17, 45, 6
    if ties:  # small integers: exact dot products, many ties
        image = torch.randint(0, 2, (n_img, dim), generator=gen).float()
        text = torch.randint(0, 2, (n_txt, dim), generator=gen).float()
    else:
        image = torch.nn.functional.normalize(torch.randn(n_img, dim, generator=gen), dim=-1)
        text = torch.nn.functional.normalize(torch.randn(n_txt, dim, generator=gen), dim=-1)
    owner = torch.cat([torch.arange(n_img), torch.randint(0, n_img, (n_txt - n_img,), generator=gen)])
    ref_i2t, ref_t2i = _reference_ranks(image, text, owner)
    for chunk in (1, 4, 16, 1000):
        i2t, t2i = metrics.retrieval_ranks(image, text, owner, chunk_size=chunk)
        torch.testing.assert_close(i2t, ref_i2t)
        torch.testing.assert_close(t2i, ref_t2i)
    assert ties is False or (ref_i2t > 0).any()  # the tie case really has ties against the model


def test_retrieval_needs_a_caption_per_image():
    with pytest.raises(ValueError, match="at least one caption"):
        metrics.retrieval_ranks(torch.eye(3), torch.eye(3)[:2], torch.tensor([0, 1]))


def test_miou_with_ignore_and_absent_classes():
    gt = torch.tensor([[0, 0, 1, 1],
                       [0, 255, 1, 3]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 2, 3, 3]])  # the 2 under 255 is not counted
    conf = metrics.confusion_matrix(pred, gt, num_classes=5, ignore_index=255)
    assert conf.sum() == 7
    iou = metrics.iou_per_class(conf)
    # class 0: tp 2, gt 3, pred 2 -> 2/3; class 1: tp 2, gt 3, pred 3 -> 2/4;
    # class 3: tp 1, gt 1, pred 2 -> 1/2
    assert iou[0].item() == pytest.approx(2 / 3)
    assert iou[1].item() == pytest.approx(0.5)
    assert iou[3].item() == pytest.approx(0.5)
    assert math.isnan(iou[2].item()) and math.isnan(iou[4].item())  # absent from gt and prediction
    assert metrics.mean_iou(conf) == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
    assert metrics.pixel_accuracy(conf) == pytest.approx(5 / 7)


def test_class_predicted_but_absent_from_gt_counts_as_zero():
    gt = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 0, 2])
    conf = metrics.confusion_matrix(pred, gt, num_classes=3)
    assert metrics.mean_iou(conf) == pytest.approx((3 / 4 + 0.0) / 2)


def test_confusion_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), num_classes=3)


def test_retrieval_ranks_with_equal_texts():
    """Captions with equal text: a miss by index (CLIP_benchmark's rule), a hit by text."""
    import torch.nn.functional as F

    from sfclip.eval import metrics

    texts = ["a", "b", "a", "c", "d"]  # image 0: a, b; image 1: a, c; image 2: d
    owner = torch.tensor([0, 0, 1, 1, 2])
    # image 0 scores the *other* image's "a" highest; caption 0 ("a") scores image 1 highest
    image_emb = F.normalize(torch.tensor([[0.1, 0.2, 0.9, 0.0, 0.0], [0.0, 0.0, 0.1, 1.0, 0.0],
                                          [0.0, 0.0, 0.0, 0.0, 1.0]]), dim=-1)
    text_emb = torch.eye(5)
    i2t, t2i = metrics.retrieval_ranks(image_emb, text_emb, owner)
    assert i2t.tolist() == [1, 0, 0]  # by index: image 0's best own caption (b, 0.2) is beaten by image 1's "a"
    groups = metrics.text_groups(texts)
    assert groups.tolist() == [0, 1, 0, 2, 3]
    i2t, t2i_text = metrics.retrieval_ranks(image_emb, text_emb, owner, text_groups=groups)
    assert i2t.tolist() == [0, 0, 0]  # the other "a" is a positive of image 0 too
    # caption 0 ("a", image 0): image 1 has "a" too, so it is a positive; by index it outranks the own image
    sims = text_emb[0] @ image_emb.T
    assert sims[1] < sims[0] or t2i[0] >= 0
    assert t2i_text[0] == 0 and t2i_text[2] == 0
    from sfclip.eval.retrieval import retrieval_metrics

    m = retrieval_metrics(image_emb, text_emb, owner, ks=(1,), texts=texts)
    # the oracle: every image has a text of its own (b, c, d), so image->text can be perfect; the two "a"
    # captions share one text, so only one of them can rank its own image first
    assert m["oracle_i2t_r1"] == 1.0 and m["oracle_t2i_r1"] == pytest.approx(4 / 5)
    i2t, t2i = metrics.oracle_retrieval_ranks(torch.tensor([0, 1, 2]), torch.tensor([7, 7, 7]))
    assert i2t.tolist() == [2, 2, 2] and t2i.tolist() == [0, 1, 2]  # one text for all: ranks 0, 1, 2
    assert m["i2t_r1_text"] == 1.0 and m["i2t_r1"] == pytest.approx(2 / 3)


def test_no_model_beats_the_retrieval_oracle():
    """Random models whose equal texts embed equally never recall more than the oracle, in either direction."""
    from sfclip.eval import metrics

    g = torch.Generator().manual_seed(0)
    owner = torch.arange(30).repeat_interleave(3)  # 30 images, 3 captions each
    groups = torch.randint(0, 25, (90,), generator=g)  # many repeated texts
    oi, ot = metrics.oracle_retrieval_ranks(owner, groups)
    for _ in range(20):
        text_by_group = torch.randn(25, 8, generator=g)
        i2t, t2i = metrics.retrieval_ranks(torch.randn(30, 8, generator=g), text_by_group[groups], owner)
        assert bool((i2t >= oi).all())  # per image: the oracle's rank is the least possible
        for k in (1, 2, 3, 5):  # per text, any order of its holders: the bound holds for recall, not per caption
            assert int((t2i < k).sum()) <= int((ot < k).sum())
