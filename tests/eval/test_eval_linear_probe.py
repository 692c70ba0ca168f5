"""Linear probe: the split, the logistic fit, and the runner with oracle and useless features."""

from __future__ import annotations

import pytest
import torch
from eval_fixtures import NAMES, ColourOracle, solid

from sfclip.eval import evaluate, image_transform, linear_probe
from sfclip.eval.images import CLIP_MEAN, CLIP_STD

TRANSFORM = image_transform(32, CLIP_MEAN, CLIP_STD)
CLASSES = NAMES[:5]


def make_split(root, per_class: int):
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            # slightly different shades: the probe sees several distinct images per class
            solid(name, (32 + i, 32)).save(root / name / f"{i}.png")
    return root


def test_stratified_split_keeps_every_class_in_train():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2])
    train, val = linear_probe.stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(len(labels)))
    assert (labels[val] == 0).sum() == 2 and (labels[val] == 1).sum() == 1 and (labels[val] == 2).sum() == 0
    assert set(labels[train].tolist()) == {0, 1, 2}


def test_fit_logistic_separates_and_decay_shrinks():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(10)
    x = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.1 * torch.randn(40, 4, generator=gen)
    w_small, b_small = linear_probe.fit_logistic(x, y, 4, weight_decay=1e-4, max_iter=100)
    w_big, _ = linear_probe.fit_logistic(x, y, 4, weight_decay=1.0, max_iter=100)
    assert ((x @ w_small + b_small).argmax(1) == y).all()
    assert w_big.norm() < w_small.norm()


@pytest.mark.parametrize("feature", ["pooled", "cls"])
def test_oracle_scores_one(tmp_path, tok, feature):
    train, test = make_split(tmp_path / "train", 4), make_split(tmp_path / "test", 2)
    out = linear_probe.run(ColourOracle(tok), tok, train, test, transform=TRANSFORM, feature=feature,
                           progress=False)
    assert out == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}


def test_constant_features_score_chance_and_modes_restored(tmp_path, tok):
    train, test = make_split(tmp_path / "train", 4), make_split(tmp_path / "test", 2)
    model = ColourOracle(tok, constant=True)
    model.train()
    out = evaluate("linear_probe", model, tok, train_data=train, test_data=test, transform=TRANSFORM,
                   weight_decays=(1e-3,), progress=False)
    # balanced classes and no signal: every logit ties, and ties count against the model
    assert out["acc1"] == 0.0
    assert model.training and all(inf and not tr for inf, tr in model.calls)


def test_too_small_for_a_validation_split(tmp_path, tok):
    train, test = make_split(tmp_path / "train", 1), make_split(tmp_path / "test", 1)
    with pytest.raises(ValueError, match="validation"):
        linear_probe.run(ColourOracle(tok), tok, train, test, transform=TRANSFORM, progress=False)
