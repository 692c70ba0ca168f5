"""The student text tower: a transformer over token ids, bidirectional by default.

Two embedding modes. "inherited": the token table is copied from the text teacher (same tokenizer, same
ids), frozen by default, and projected to the tower width when the widths differ; this is where SF-CLIP's
multilingual transfer comes from. "own": a trainable table of the given tokenizer (the CLIP baseline).
Pooling uses the tokenizer's own special ids (first token, end token) or the mean over real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import Block, run_blocks

__all__ = ["TextConfig", "TextTransformer", "TEXT_EMBEDDINGS", "EMBED_NORMS", "padded_length", "trim_padding"]

_POOLS = ("first", "mean", "eos")
# "own": a trainable token table; "inherited": the text teacher's table (SF-CLIP). Also StudentConfig's choices.
TEXT_EMBEDDINGS = ("own", "inherited")
# How an inherited table is brought to the tower's scale: a LayerNorm over token + position ("layernorm"), or
# one fixed factor that gives the table unit RMS, set when it is inherited ("scale"). "scale" is linear per
# token, so it folds into the table and the tower maps onto OpenCLIP's TextTransformer (`sfclip export`).
EMBED_NORMS = ("layernorm", "scale")


@dataclass
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    causal: bool = False
    pool: str = "first"  # first | mean | eos
    embedding: str = "own"  # own | inherited
    embed_width: int = 0  # width of the token table; 0 = the tower width
    freeze_embeddings: bool = True  # inherited tables only
    embed_norm: str = "layernorm"  # inherited tables only: layernorm | scale (see EMBED_NORMS)
    norm_eps: float = 1e-5  # every LayerNorm of the tower
    pad_id: int = 0
    eos_id: int = -1  # needed for pool="eos"

    def __post_init__(self) -> None:
        if self.pool not in _POOLS:
            raise ValueError(f"text.pool must be one of {_POOLS}, got {self.pool!r}")
        if self.embedding not in TEXT_EMBEDDINGS:
            raise ValueError(f"text.embedding must be one of {TEXT_EMBEDDINGS}, got {self.embedding!r}")
        if self.embed_norm not in EMBED_NORMS:
            raise ValueError(f"text.embed_norm must be one of {EMBED_NORMS}, got {self.embed_norm!r}")
        if self.width % self.heads:
            raise ValueError(f"text.width {self.width} is not divisible by text.heads {self.heads}")
        if self.causal and self.pool == "first":
            raise ValueError("text.causal=true needs text.pool='eos' or 'mean': the first token sees nothing")
        if self.pool == "eos" and self.eos_id < 0:
            raise ValueError("text.pool='eos' needs text.eos_id (the tokenizer's end-of-sequence id)")


def padded_length(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> 0-d tensor: 1 + the last column holding a real token in any row.

    Columns after it are padding in every row: the tower masks padded keys and uses no padded query
    (pooling reads real tokens), so dropping them changes no real token's output.
    """
    return attention_mask.bool().any(0).long().cumsum(0).argmax() + 1


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing all-padding columns of a batch (B, T) -> (B, L), L <= T. Captions are mostly far
    shorter than the context, so this saves most of the text tower's work; costs a host sync on a GPU."""
    length = int(padded_length(attention_mask))
    return input_ids[:, :length], attention_mask[:, :length]


class TextTransformer(nn.Module):
    """Token ids (B, T) -> {"pooled": (B, E), "tokens": (B, T, D)}."""

    embed_scale: torch.Tensor  # () the factor of embed_norm="scale"; 1 otherwise

    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        ew = cfg.embed_width or cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, ew)
        self.embed_proj = nn.Linear(ew, cfg.width) if ew != cfg.width else nn.Identity()
        # Inherited tables live in the teacher's scale; a norm (or a fixed factor) puts tokens and positions
        # on one footing.
        inherited = cfg.embedding == "inherited"
        self.embed_norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps) if inherited and cfg.embed_norm == "layernorm" \
            else nn.Identity()
        self.register_buffer("embed_scale", torch.ones(()), persistent=inherited and cfg.embed_norm == "scale")
        self.pos_embed = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio, eps=cfg.norm_eps)
                                    for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.proj = nn.Linear(cfg.width, embed_dim, bias=False)
        self.grad_checkpointing = False
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        if cfg.embedding == "inherited" and cfg.freeze_embeddings:
            self.token_embedding.weight.requires_grad_(False)

    @torch.no_grad()
    def inherit_embeddings(self, table: torch.Tensor) -> None:
        """Copy a teacher's word-embedding table (V, D) into the token table."""
        if tuple(table.shape) != tuple(self.token_embedding.weight.shape):
            raise ValueError(f"teacher embedding table {tuple(table.shape)} does not match the student's "
                             f"{tuple(self.token_embedding.weight.shape)}: set text.vocab_size and text.embed_width "
                             "from the teacher (sfclip.build.build_student does this)")
        self.token_embedding.weight.copy_(table)
        if self.cfg.embed_norm == "scale":
            self.embed_scale.fill_(table.float().pow(2).mean().rsqrt().item())

    def key_padding_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            return input_ids != self.cfg.pad_id
        return attention_mask.bool()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
        B, T = input_ids.shape
        if T > self.cfg.context_length:
            raise ValueError(f"{T} tokens exceed text.context_length={self.cfg.context_length}")
        keep = self.key_padding_mask(input_ids, attention_mask)  # (B, T)
        x = self.token_embedding(input_ids)  # (B, T, Ew)
        if self.cfg.embedding == "inherited" and self.cfg.embed_norm == "scale":
            x = x * self.embed_scale.to(x.dtype)
        x = self.embed_proj(x)  # (B, T, D)
        x = self.embed_norm(x + self.pos_embed[:T])
        attn = keep[:, None, None, :]  # (B, 1, 1, T): True = attend
        if self.cfg.causal:
            attn = attn & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        x = run_blocks(self.blocks, x, self.grad_checkpointing, attn_mask=attn)
        x = self.norm(x)  # (B, T, D)
        return {"pooled": self.proj(self.pool(x, input_ids, keep)), "tokens": x}

    def pool(self, x: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if self.cfg.pool == "first":
            return x[:, 0]
        if self.cfg.pool == "mean":
            m = keep.unsqueeze(-1).to(x.dtype)
            return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        # The first end-of-sequence token; rows without one (truncated) use their last real token.
        is_eos = input_ids == self.cfg.eos_id  # (B, T)
        last_real = keep.long().sum(1).clamp_min(1) - 1
        idx = torch.where(is_eos.any(1), is_eos.long().argmax(1), last_real)
        return x[torch.arange(x.shape[0], device=x.device), idx]
