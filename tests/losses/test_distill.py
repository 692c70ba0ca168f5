"""Masked distillation losses against a dense reference: the mean over masked positions."""

import pytest
import torch
import torch.nn.functional as F

from sfclip.losses import masked_distill_loss


@pytest.mark.parametrize("kind", ["smooth_l1", "mse", "cosine"])
def test_masked_loss_equals_mean_over_selected_positions(kind):
    torch.manual_seed(0)
    pred = torch.randn(3, 6, 5, dtype=torch.double, requires_grad=True)
    target = torch.randn(3, 6, 5, dtype=torch.double) * 2
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, [1, 2]] = True
    mask[2, [0, 3, 4, 5]] = True
    got = masked_distill_loss(pred, target, mask, kind)
    p, t = pred[mask], target[mask]  # (M, D): the plain reference
    if kind == "smooth_l1":
        ref = F.smooth_l1_loss(p, t, reduction="mean")
    elif kind == "mse":
        ref = F.mse_loss(p, t, reduction="mean")
    else:
        ref = (1 - F.cosine_similarity(p, t, dim=-1)).mean()
    torch.testing.assert_close(got, ref)
    g1 = torch.autograd.grad(got, pred)[0]
    g2 = torch.autograd.grad(ref, pred)[0]
    torch.testing.assert_close(g1, g2)
    assert g1[~mask].abs().sum() == 0  # unmasked positions get no gradient


def test_all_positions_when_no_mask():
    pred, target = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    torch.testing.assert_close(masked_distill_loss(pred, target, None, "mse"), F.mse_loss(pred, target))


def test_unknown_loss():
    with pytest.raises(ValueError, match="distillation loss"):
        masked_distill_loss(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), None, "l3")
