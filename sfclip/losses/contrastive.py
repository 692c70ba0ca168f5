"""Image-text contrastive losses: CLIP's InfoNCE and SigLIP's pairwise sigmoid, across ranks.

With several ranks, features are all-gathered *with* gradients and each rank scores its own rows against
all columns (OpenCLIP's `gather_with_grad=True, local_loss=True`). The mean over ranks of the local
losses, and the gradients DDP averages, equal the single-process loss on the concatenated batch.

Under gradient accumulation, `splice_rows` puts one micro-batch's fresh features into the features of the
whole accumulated batch (computed once without gradients), so that each micro-batch is scored against all
of them (OpenCLIP's feature-cached accumulation) and the summed gradients equal the big batch's.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["gather_features", "clip_loss", "siglip_loss", "ContrastiveLoss", "splice_rows"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient of this rank's rows (a reduce-scatter).

    Synchronous collectives only: the functional (async) all-gather's pending work could outlive the
    process group at exit on gloo (an occasional SIGABRT at teardown).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        dist.all_gather_into_tensor(out, x.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        rank, world = _world()
        if dist.get_backend() in ("nccl", "xccl"):
            out = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad.contiguous())
            return out
        # gloo has no reduce-scatter: sum everything (features are small, B x E) and keep this rank's rows;
        # on a copy, never in autograd's own buffer.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad.chunk(world)[rank]


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """All-gather (B, E) from every rank into (W*B, E), keeping the autograd graph to every rank's copy."""
    _, world = _world()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)


def splice_rows(cached: torch.Tensor, rows: torch.Tensor, start: int, micro_batches: int) -> torch.Tensor:
    """`cached` (N, E), no gradient, with rows `start:start+B` replaced by `rows` (B, E), which carry theirs.

    Each of the `micro_batches` backward passes is of the loss divided by `micro_batches` (the train loop's
    accumulation), yet must give these rows the whole loss's gradient, since no other pass reaches them: their
    gradient is scaled up by `micro_batches` (the value is unchanged). Parameters the loss reads directly (the
    temperature) get 1/micro_batches of it in each pass, the whole of it summed over the passes.
    """
    boosted = rows * micro_batches - rows.detach() * (micro_batches - 1)  # value: rows; gradient: x micro_batches
    return torch.cat([cached[:start], boosted, cached[start + rows.shape[0]:]])  # (N, E)


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on normalized local features (B, E) against all gathered ones."""
    rank, _ = _world()
    all_image, all_text = gather_features(image), gather_features(text)
    logits_i = logit_scale * image @ all_text.T  # (B, W*B)
    logits_t = logit_scale * text @ all_image.T  # (B, W*B)
    labels = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
    return (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels)) / 2


def siglip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP: binary log-loss over every (local image, global text) pair, summed per image row."""
    rank, _ = _world()
    all_text = gather_features(text)
    logits = logit_scale * image @ all_text.T + logit_bias  # (B, W*B)
    labels = -torch.ones_like(logits)
    idx = torch.arange(image.shape[0], device=image.device)
    labels[idx, idx + rank * image.shape[0]] = 1.0
    return -F.logsigmoid(labels * logits).sum() / image.shape[0]


class ContrastiveLoss(nn.Module):
    """`kind="clip"` (InfoNCE) or `kind="siglip"`, scaled by `exp(log_scale)`.

    No clamp here: a clamp inside the loss zeroes the temperature's gradient once it passes the bound, so
    it could never come back. As in OpenCLIP, the train loop clamps the parameter itself to [0, log 100]
    after each optimizer step.
    """

    def __init__(self, kind: str = "clip") -> None:
        super().__init__()
        if kind not in ("clip", "siglip"):
            raise ValueError(f"contrastive loss must be 'clip' or 'siglip', got {kind!r}")
        self.kind = kind

    def forward(self, image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        scale = log_scale.exp()
        if self.kind == "clip":
            return clip_loss(image, text, scale)
        if logit_bias is None:
            raise ValueError("the siglip loss needs the model's logit_bias")
        return siglip_loss(image, text, scale, logit_bias)
