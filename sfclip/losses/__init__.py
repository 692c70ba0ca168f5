"""Losses: pure functions plus thin modules. Loss dicts use keys ending in `_loss`."""

from .contrastive import ContrastiveLoss, clip_loss, gather_features, siglip_loss
from .distill import DISTILL_LOSSES, masked_distill_loss, token_loss

__all__ = ["ContrastiveLoss", "clip_loss", "gather_features", "siglip_loss", "DISTILL_LOSSES",
           "masked_distill_loss", "token_loss"]
