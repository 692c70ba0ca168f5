"""sfclip students as OpenCLIP folders, and OpenCLIP state dicts as sfclip tensors.

The layouts match block for block (pre-norm blocks, a fused qkv projection = `nn.MultiheadAttention`'s
`in_proj`, GELU MLPs, a final LayerNorm, bias-free projections); what differs is folded:
- sfclip's patch embedding has a bias, OpenCLIP's `conv1` none: the bias is the same for every patch, so it
  joins the patch rows of the position table.
- an inherited token table (SF-CLIP) passes through a fixed scale and a projection to the tower width before
  the position is added: both are linear per token, so the exported table is `proj(scale * table)`.
What cannot be expressed in open_clip 3.3.0's config is refused, naming the layer (`exportable`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import InteropError
from ..models import SFCLIP, ModelConfig
from ..tokenizer import Tokenizer

__all__ = ["export_open_clip", "exportable", "open_clip_config", "to_open_clip_state", "from_open_clip_state",
           "BLOCK_NAMES", "CONFIG_FILE", "WEIGHTS_FILE"]

log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE = "open_clip_config.json", "open_clip_model.safetensors"
# sfclip block tensor -> OpenCLIP ResidualAttentionBlock tensor (same shapes).
BLOCK_NAMES = {
    "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
    "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.weight": "attn.out_proj.weight", "attn.proj.bias": "attn.out_proj.bias",
    "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
}
# Single tensors: sfclip name -> OpenCLIP name (reshapes and folds are applied by the two converters).
TOWER_NAMES = {
    "visual.patch_embed.weight": "visual.conv1.weight",
    "visual.cls_token": "visual.class_embedding",
    "visual.pos_embed": "visual.positional_embedding",
    "visual.ln_pre.weight": "visual.ln_pre.weight", "visual.ln_pre.bias": "visual.ln_pre.bias",
    "visual.norm.weight": "visual.ln_post.weight", "visual.norm.bias": "visual.ln_post.bias",
    "visual.proj.weight": "visual.proj",
    "text.token_embedding.weight": "token_embedding.weight",
    "text.pos_embed": "positional_embedding",
    "text.norm.weight": "ln_final.weight", "text.norm.bias": "ln_final.bias",
    "text.proj.weight": "text_projection",
    "logit_scale": "logit_scale", "logit_bias": "logit_bias",
}
_BLOCK_ROOTS = {"visual.blocks.": "visual.transformer.resblocks.", "text.blocks.": "transformer.resblocks."}


def open_clip_name(name: str) -> str | None:
    """The OpenCLIP state-dict name of an sfclip tensor, or None where OpenCLIP has no such tensor."""
    if name in TOWER_NAMES:
        return TOWER_NAMES[name]
    for root, oc_root in _BLOCK_ROOTS.items():
        if name.startswith(root):
            index, _, rest = name[len(root):].partition(".")
            if rest in BLOCK_NAMES:
                return f"{oc_root}{index}.{BLOCK_NAMES[rest]}"
    return None


def exportable(cfg: ModelConfig) -> None:
    """Raise `InteropError` naming the first layer open_clip 3.3.0 cannot express exactly."""
    t = cfg.text
    if not t.causal:
        raise InteropError(
            "text tower: bidirectional attention (text.causal=false) masks padding, and open_clip 3.3.0 cannot "
            "switch a padding mask on from its config (TextTransformer's use_pad_mask is not a CLIPTextCfg field), "
            "so padded captions would encode differently there; students trained with text.causal=true and "
            "text.pool=eos export exactly")
    if t.pool != "eos":
        raise InteropError(f"text tower: text.pool={t.pool!r} has no open_clip equivalent for a causal tower "
                           "(open_clip pools first / last / argmax / eos); train with text.pool=eos")
    if t.embedding == "inherited" and t.embed_norm == "layernorm":
        raise InteropError("text tower: text.embed_norm=layernorm is a LayerNorm between the token embedding and "
                           "the first block, which open_clip's TextTransformer does not have; students trained "
                           "with text.embed_norm=scale export exactly")


@torch.no_grad()
def _token_table(model: SFCLIP) -> torch.Tensor:
    """(V, D): the table as the tower uses it, scale and projection folded in."""
    text = model.text
    table = text.token_embedding.weight.float()
    if text.cfg.embedding == "inherited" and text.cfg.embed_norm == "scale":
        table = table * text.embed_scale.float()
    return torch.cat([text.embed_proj(chunk) for chunk in table.split(65536)]) if not isinstance(
        text.embed_proj, torch.nn.Identity) else table


@torch.no_grad()
def to_open_clip_state(model: SFCLIP, logit_bias: bool = False) -> dict[str, torch.Tensor]:
    """The student's image and text towers and temperature under OpenCLIP's names (fp32, contiguous)."""
    exportable(model.cfg)
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, value in sd.items():
        oc = open_clip_name(name)
        if oc is None or (oc == "logit_bias" and not logit_bias):
            continue  # distillation heads, the mask token, the embedding projection/scale (folded below)
        out[oc] = value
    d = model.cfg.vision.width
    pos = sd["visual.pos_embed"][0].clone()  # (1+N, D)
    pos[1:] += sd["visual.patch_embed.bias"]  # the same bias on every patch
    out["visual.positional_embedding"] = pos
    out["visual.class_embedding"] = sd["visual.cls_token"].reshape(d)
    out["visual.proj"] = sd["visual.proj.weight"].t()  # OpenCLIP: x @ proj
    out["text_projection"] = sd["text.proj.weight"].t()
    out["token_embedding.weight"] = _token_table(model).float()
    return {k: v.contiguous() for k, v in out.items()}


def open_clip_config(cfg: ModelConfig, tokenizer: Tokenizer, mean: list[float], std: list[float],
                     logit_bias: bool = False) -> dict[str, Any]:
    """`open_clip_config.json`: the model config open_clip builds the same towers from, and the preprocessing."""
    exportable(cfg)
    v, t = cfg.vision, cfg.text
    model_cfg: dict[str, Any] = {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {
            "image_size": v.image_size, "patch_size": v.patch_size, "width": v.width, "layers": v.layers,
            "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio, "no_ln_pre": not v.ln_pre,
            "pool_type": "tok" if v.pool == "cls" else "avg", "norm_kwargs": {"eps": v.norm_eps},
        },
        "text_cfg": {
            "context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width, "heads": t.heads,
            "layers": t.layers, "mlp_ratio": t.mlp_ratio, "pool_type": "eos", "eos_id": t.eos_id,
            "pad_id": t.pad_id, "no_causal_mask": False, "norm_kwargs": {"eps": t.norm_eps},
            # open_clip reads the tokenizer files of a local-dir folder from the folder itself; the name only
            # has to be set for it to use a Hugging Face tokenizer at all.
            "hf_tokenizer_name": str(getattr(tokenizer.hf, "name_or_path", "") or "tokenizer"),
        },
    }
    if logit_bias:
        model_cfg["init_logit_bias"] = 0.0
    preprocess = {"size": v.image_size, "mean": list(mean), "std": list(std), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def _template_with_prefix(tokenizer: Tokenizer):
    """The tokenizer's own special-token template with the text prefix's pieces inside it, so that open_clip,
    which tokenizes the caption alone, gets the ids sfclip gets for `prefix + caption`."""
    from tokenizers.processors import TemplateProcessing

    hf = tokenizer.hf
    probe = "hello"
    bare = hf(probe, add_special_tokens=False)["input_ids"]
    full = hf(probe)["input_ids"]
    with_prefix = hf(tokenizer.prefix + probe)["input_ids"]
    starts = [i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare]
    if not starts:
        raise InteropError("tokenizer: cannot place the caption inside its special tokens")
    pre, post = full[:starts[0]], full[starts[0] + len(bare):]
    n_prefix = len(with_prefix) - len(full)
    if n_prefix <= 0 or with_prefix[:len(pre)] != pre or with_prefix[len(with_prefix) - len(post) - len(bare):] \
            != bare + post:
        raise InteropError(f"tokenizer: the prefix {tokenizer.prefix!r} does not tokenize apart from the caption, "
                           "so it cannot be moved into the tokenizer's template")
    start = with_prefix[:len(pre) + n_prefix]  # the leading special tokens, then the prefix's pieces
    # Named groups of ids (a piece such as ":" cannot stand in a template by itself).
    groups = [("sfclip_start", start)] + ([("sfclip_end", post)] if post else [])
    specials = [{"id": name, "ids": ids, "tokens": hf.convert_ids_to_tokens(ids)} for name, ids in groups]
    single = ["sfclip_start", "$A"] + (["sfclip_end"] if post else [])
    return TemplateProcessing(single=single, special_tokens=specials)


def write_tokenizer(tokenizer: Tokenizer, out: Path, probes: list[str]) -> None:
    """The student's tokenizer in `out`, loadable by open_clip's HFTokenizer, checked on `probes` to give the
    ids sfclip's tokenizer gives (padding, truncation and the text prefix included)."""
    from tokenizers import Tokenizer as Backend
    from transformers import AutoTokenizer

    tokenizer.hf.save_pretrained(out)
    if tokenizer.prefix:
        backend = Backend.from_file(str(out / "tokenizer.json"))
        backend.post_processor = _template_with_prefix(tokenizer)
        backend.save(str(out / "tokenizer.json"))
    exported = AutoTokenizer.from_pretrained(str(out))
    got = exported(probes, return_tensors="pt", max_length=tokenizer.context_length, padding="max_length",
                   truncation=True).input_ids
    want = tokenizer(probes)["input_ids"]
    if not torch.equal(got, want):
        row = int((got != want).any(1).nonzero()[0])
        raise InteropError(f"tokenizer: the exported tokenizer gives other ids than sfclip's for {probes[row]!r} "
                           f"({got[row].tolist()[:12]} vs {want[row].tolist()[:12]})")


# Captions the exported tokenizer is checked on: several scripts, a long one that is truncated.
PROBES = ["a photo of a red dress on grass", "ein rotes Kleid auf Gras", "une robe rouge sur l'herbe",
          "草の上の赤いドレス", "красное платье на траве", "فستان أحمر على العشب", "一双蓝色的靴子",
          " ".join(["a long caption that does not fit"] * 30)]


def export_open_clip(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the student at `checkpoint` as an OpenCLIP folder: `open_clip.create_model_and_transforms(
    "local-dir:OUT")` and `open_clip.get_tokenizer("local-dir:OUT")` load it offline, with `encode_image` /
    `encode_text` equal to sfclip's. Distillation heads stay behind (open_clip has no place for them)."""
    from ..checkpoint import atomic_dir, image_stats, load, resolve_checkpoint

    folder = resolve_checkpoint(checkpoint)
    model, tokenizer, _ = load(folder)
    exportable(model.cfg)
    mean, std = image_stats(folder)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        config = open_clip_config(model.cfg, tokenizer, mean, std)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(to_open_clip_state(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt",
                                                                                "sfclip": str(folder)})
        write_tokenizer(tokenizer, tmp, PROBES)
    heads = ", ".join(model.heads) or "none"
    log.info("exported %s to %s (open_clip local-dir; distillation heads left out: %s)", folder, out, heads)
    return out


def from_open_clip_state(state: dict[str, torch.Tensor], model: SFCLIP) -> tuple[dict[str, torch.Tensor], list[str]]:
    """OpenCLIP tensors under sfclip's names (inverse of `to_open_clip_state`; the patch bias is zero) and the
    OpenCLIP names that have no sfclip place."""
    names = {open_clip_name(k): k for k in model.state_dict()}
    names.pop(None, None)
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for oc, value in state.items():
        if oc == "attn_mask" or oc.endswith(".attn_mask"):
            continue  # the causal mask buffer of older OpenCLIP checkpoints
        sf = names.get(oc)
        if sf is None:
            unused.append(oc)
            continue
        if oc in ("visual.proj", "text_projection"):
            value = value.t()
        elif oc == "visual.class_embedding":
            value = value.reshape(1, 1, -1)
        elif oc == "visual.positional_embedding":
            value = value.unsqueeze(0)
        out[sf] = value
    if "visual.conv1.weight" in state:
        weight = state["visual.conv1.weight"]
        out["visual.patch_embed.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return out, unused
