"""Model FLOPs of a training step counted from the configuration, for MFU.

Convention (PaLM appendix B; Chinchilla): only matrix multiplications count, 2 FLOPs per multiply-add,
attention included (QK^T and AV over every query-key pair, masked or not); norms, activations, softmax
and the optimizer are left out. A trainable pass costs 3x its forward (backward = 2x forward); a frozen
teacher costs its forward only. Token embedding lookups are free.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clip import ModelConfig
from .heads import HeadConfig
from .text import TextConfig
from .vit import VisionConfig

__all__ = ["EncoderShape", "encoder_forward_flops", "vision_forward_flops", "text_forward_flops",
           "head_forward_flops", "step_flops"]


@dataclass(frozen=True)
class EncoderShape:
    """A transformer encoder by its shapes: `tokens` per sequence, and for an image encoder the flattened
    patch size `patch_dim` = 3 * p * p of its patch embedding (0 for text)."""

    width: int
    layers: int
    mlp_hidden: int
    tokens: int
    patch_dim: int = 0
    patches: int = 0  # patches embedded (tokens minus class/register tokens)


def encoder_forward_flops(s: EncoderShape) -> int:
    """Forward FLOPs of one sequence: per layer QKV (6nd^2), QK^T and AV (4n^2d), output projection
    (2nd^2) and the MLP (4ndh); plus the patch embedding."""
    n, d = s.tokens, s.width
    per_layer = 8 * n * d * d + 4 * n * n * d + 4 * n * d * s.mlp_hidden
    return s.layers * per_layer + 2 * s.patches * s.patch_dim * d


def vision_forward_flops(cfg: VisionConfig, embed_dim: int, kept_patches: int | None = None) -> int:
    """Student image tower, one image: patch embedding of every patch, the encoder over the class token
    plus `kept_patches` (all of them unless patches are dropped), and the pooled projection."""
    n = cfg.grid**2
    kept = n if kept_patches is None else kept_patches
    enc = EncoderShape(cfg.width, cfg.layers, int(cfg.width * cfg.mlp_ratio), 1 + kept)
    return encoder_forward_flops(enc) + 2 * n * 3 * cfg.patch_size**2 * cfg.width + 2 * cfg.width * embed_dim


def text_forward_flops(cfg: TextConfig, embed_dim: int, length: int | None = None) -> int:
    """Student text tower, one caption of `length` tokens (the context length unless given): the
    projection of an inherited table of another width, the encoder and the pooled projection."""
    t = cfg.context_length if length is None else length
    enc = EncoderShape(cfg.width, cfg.layers, int(cfg.width * cfg.mlp_ratio), t)
    ew = cfg.embed_width or cfg.width
    embed_proj = 2 * t * ew * cfg.width if ew != cfg.width else 0
    return encoder_forward_flops(enc) + embed_proj + 2 * cfg.width * embed_dim


def head_forward_flops(cfg: HeadConfig, in_dim: int, tokens: int) -> int:
    """A distillation head over `tokens` student tokens."""
    if cfg.kind == "linear":
        return 2 * tokens * in_dim * cfg.width
    hidden = cfg.hidden or cfg.width
    return 2 * tokens * (in_dim * hidden + hidden * cfg.width)


def step_flops(cfg: ModelConfig, batch: int, distill_rows: int = 0, masked_kept_patches: int | None = None,
               shared_view: bool = False, text_length: int | None = None, distill_text: bool = True,
               teachers: tuple[EncoderShape, ...] = ()) -> dict[str, int]:
    """Model FLOPs of one SF-CLIP training step, by part, and their `total`.

    - `clean`: both towers over the batch (with `shared_view`, the image tower over the masked view,
      `masked_kept_patches` tokens per image), 3x forward;
    - `masked`: the masked student passes on the `distill_rows` subset: the image tower with
      `masked_kept_patches` patches (None: all, mask tokens in place) unless `shared_view`, and the
      text tower when `distill_text`, 3x forward;
    - `heads`: every head in `cfg.heads` over the subset's tokens, 3x forward;
    - `teachers`: each teacher's forward over the subset (no backward);
    - `contrastive`: the two B x B logit matrices, 3x forward.

    Plain CLIP is `distill_rows=0`.
    """
    v, t, E = cfg.vision, cfg.text, cfg.embed_dim
    T = t.context_length if text_length is None else text_length
    image_clean = vision_forward_flops(v, E, masked_kept_patches if shared_view else None)
    parts = {"clean": 3 * batch * (image_clean + text_forward_flops(t, E, T)), "masked": 0, "heads": 0,
             "teachers": 0, "contrastive": 3 * 2 * (2 * batch * batch * E)}
    if distill_rows:
        k = distill_rows
        has_vision = any(h.tower == "vision" for h in cfg.heads)
        if has_vision and not shared_view:
            parts["masked"] += 3 * k * vision_forward_flops(v, E, masked_kept_patches)
        if distill_text and any(h.tower == "text" for h in cfg.heads):
            parts["masked"] += 3 * k * text_forward_flops(t, E, T)
        image_tokens = v.grid**2 if masked_kept_patches is None else masked_kept_patches
        for h in cfg.heads:
            width, tokens = (v.width, image_tokens) if h.tower == "vision" else (t.width, T)
            parts["heads"] += 3 * k * head_forward_flops(h, width, tokens)
        parts["teachers"] = k * sum(encoder_forward_flops(s) for s in teachers)
    parts["total"] = sum(parts.values())
    return parts
