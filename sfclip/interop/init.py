"""`student.init`: start a student's image and/or text tower from an OpenCLIP model or a timm ViT.

Sources (the `student.init` string):
- `open_clip:DIR`: an OpenCLIP folder (`open_clip_config.json` + weights, as `sfclip export` or OpenCLIP's
  `push_to_hf_hub` write it); its config is checked against the student's (activation, norms, pooling).
- `open_clip:FILE`: an OpenCLIP state dict (`.safetensors`, `.bin`, `.pt`), tensors only.
- `open_clip:hf-hub:ORG/NAME`: an OpenCLIP model on the Hugging Face Hub (downloaded into its cache).
- `timm:FILE`: a timm VisionTransformer state dict; `timm:NAME`: `timm.create_model(NAME, pretrained=True)`
  (needs timm and its weights). Image tower only.

Tensors are mapped by name and must fit the student's shapes: set the student's size to the source's
(`student.model` and `student.overrides`). Strict (the default) fails unless every tensor of the chosen towers
comes from the source and every source tensor of those towers has a place; the report lists both.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InteropError
from ..models import SFCLIP
from .open_clip import CONFIG_FILE, from_open_clip_state

__all__ = ["InitReport", "init_student", "read_source", "TOWER_CHOICES"]

log = logging.getLogger(__name__)

TOWER_CHOICES = ("both", "vision", "text")
_CHECKPOINT_ORDER = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                     "pytorch_model.bin", "model.pth")


@dataclass
class InitReport:
    """What `init_student` did: sfclip tensors loaded, sfclip tensors of the chosen towers left as they were
    (`not_loaded`), source tensors with no place in the student (`unused`), source tensors that never belong
    to a CLIP tower (`ignored`: a timm classifier head), and student layers the kind of source lacks (`new`)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # student tensors this kind of source never has

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded from {self.source}"]
        for label, names in (("shape mismatch", self.mismatched), ("not loaded", self.not_loaded),
                             ("unused in the source", self.unused), ("ignored", self.ignored),
                             ("kept at initialisation (no such layer in the source)", self.new)):
            if names:
                parts.append(f"{label}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
        return "; ".join(parts)


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)  # never runs pickled code
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InteropError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _hub_open_clip(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    allow = [CONFIG_FILE, *_CHECKPOINT_ORDER]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow))
    except Exception as exc:  # noqa: BLE001 - network, auth and cache misses alike
        raise InteropError(f"open_clip:hf-hub:{repo_id}: cannot get it from the Hugging Face Hub ({exc})") from None


def read_source(spec: str) -> tuple[str, dict[str, torch.Tensor], dict | None]:
    """`student.init` -> (kind, state dict, OpenCLIP model config or None)."""
    kind, sep, where = spec.partition(":")
    if not sep or kind not in ("open_clip", "timm") or not where:
        raise InteropError(f"student.init={spec!r}: expected open_clip:DIR, open_clip:FILE, "
                           "open_clip:hf-hub:ORG/NAME, timm:FILE or timm:NAME")
    if kind == "open_clip":
        path = _hub_open_clip(where.removeprefix("hf-hub:")) if where.startswith("hf-hub:") else Path(where)
        if path.is_dir():
            config = None
            if (path / CONFIG_FILE).is_file():
                raw = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
                config = raw.get("model_cfg", raw)
            found = next((path / n for n in _CHECKPOINT_ORDER if (path / n).is_file()), None)
            if found is None:
                raise InteropError(f"student.init: no OpenCLIP weights in {path} (looked for "
                                   f"{', '.join(_CHECKPOINT_ORDER)})")
            return kind, _load_state_file(found), config
        if path.is_file():
            return kind, _load_state_file(path), None
        raise InteropError(f"student.init: {path} does not exist")
    path = Path(where)
    if path.is_file():
        return kind, _load_state_file(path), None
    if path.suffix or "/" in where:
        raise InteropError(f"student.init: {path} does not exist")
    try:
        import timm
    except ImportError:
        raise InteropError(f"student.init={spec!r} needs timm (pip install 'sfclip[timm]')") from None
    return kind, timm.create_model(where, pretrained=True).state_dict(), None


# timm VisionTransformer -> sfclip image tower (block tensors keep their names).
_TIMM_NAMES = {"patch_embed.proj.weight": "visual.patch_embed.weight",
               "patch_embed.proj.bias": "visual.patch_embed.bias",
               "cls_token": "visual.cls_token", "pos_embed": "visual.pos_embed",
               "norm_pre.weight": "visual.ln_pre.weight", "norm_pre.bias": "visual.ln_pre.bias",
               "norm.weight": "visual.norm.weight", "norm.bias": "visual.norm.bias"}
_TIMM_HEAD = ("head.", "head_drop.")


def from_timm_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """timm ViT tensors under sfclip's names, the timm names with no place, and the classifier head's."""
    out: dict[str, torch.Tensor] = {}
    unused, ignored = [], []
    for name, value in state.items():
        if name.startswith(_TIMM_HEAD):
            ignored.append(name)
        elif name in _TIMM_NAMES:
            out[_TIMM_NAMES[name]] = value
        elif name.startswith("blocks."):
            out["visual." + name] = value
        else:
            unused.append(name)  # register tokens, fc_norm, layer scale, attention pooling: no sfclip place
    return out, unused, ignored


def _check_open_clip_config(config: dict, model: SFCLIP, towers: str) -> None:
    """Architecture options that change outputs without changing any tensor shape."""
    problems = []
    if config.get("quick_gelu"):
        problems.append("the source uses QuickGELU, sfclip's blocks use GELU")
    vc, tc = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if towers in ("both", "vision"):
        eps = (vc.get("norm_kwargs") or {}).get("eps", 1e-5)
        if abs(eps - model.cfg.vision.norm_eps) > 1e-12:
            problems.append(f"vision LayerNorm eps is {eps} in the source: set vision.norm_eps={eps}")
        pool = {"tok": "cls", "avg": "mean"}.get(vc.get("pool_type", "tok"))
        if pool != model.cfg.vision.pool:
            problems.append(f"vision pool_type {vc.get('pool_type', 'tok')!r}: set vision.pool={pool}")
        if vc.get("ls_init_value") is not None or vc.get("final_ln_after_pool") or vc.get("timm_model_name"):
            problems.append("the source's image tower has layer scale, final_ln_after_pool or a timm trunk")
    if towers in ("both", "text"):
        eps = (tc.get("norm_kwargs") or {}).get("eps", 1e-5)
        if abs(eps - model.cfg.text.norm_eps) > 1e-12:
            problems.append(f"text LayerNorm eps is {eps} in the source: set text.norm_eps={eps}")
        if tc.get("no_causal_mask", False) == model.cfg.text.causal:
            problems.append(f"the source's text tower is {'bidirectional' if tc.get('no_causal_mask') else 'causal'}:"
                            f" set text.causal={str(not tc.get('no_causal_mask', False)).lower()}")
        if tc.get("hf_model_name") or tc.get("embed_cls") or tc.get("ls_init_value") is not None:
            problems.append("the source's text tower is a Hugging Face model, CoCa-style or has layer scale")
    if problems:
        raise InteropError("student.init: " + "; ".join(problems))


def _in_towers(name: str, towers: str) -> bool:
    if name.startswith("visual."):
        return towers in ("both", "vision")
    if name.startswith("text."):
        return towers in ("both", "text")
    return towers == "both" and name in ("logit_scale", "logit_bias")


def _own_only(name: str, model: SFCLIP) -> bool:
    """Student tensors no CLIP source has: masking, distillation heads, an inherited table and its mapping."""
    if name.startswith("heads.") or name == "visual.mask_token" or name == "logit_bias":
        return True
    inherited = model.cfg.text.embedding == "inherited"
    return inherited and name.startswith(("text.token_embedding.", "text.embed_proj.", "text.embed_norm.",
                                          "text.embed_scale"))


@torch.no_grad()
def init_student(model: SFCLIP, spec: str, towers: str = "both", strict: bool = True) -> InitReport:
    """Load the tensors of `spec` (see the module docstring) into `towers` of `model`; returns the report.
    Strict: raise `InteropError` unless every tensor of those towers is loaded and every source tensor of
    them is used (shape mismatches are always listed, and are errors when strict)."""
    if towers not in TOWER_CHOICES:
        raise InteropError(f"student.init_towers must be one of {TOWER_CHOICES}, got {towers!r}")
    kind, state, config = read_source(spec)
    report = InitReport(source=spec)
    if kind == "timm":
        if towers != "vision":
            raise InteropError(f"student.init={spec!r}: a timm ViT has an image tower only; set "
                               "student.init_towers=vision")
        mapped, unused, report.ignored = from_timm_state(state)
        # A classifier trunk has no projection into a joint space: the student's keeps its initialisation.
        report.new = ["visual.proj.weight"]
    else:
        if config is not None:
            _check_open_clip_config(config, model, towers)
        mapped, unused = from_open_clip_state(state, model)
    own = model.state_dict()
    if model.cfg.text.embedding == "inherited":
        # The table is the text teacher's (its tokenizer's ids); another model's table does not belong there.
        if "text.token_embedding.weight" in mapped and towers in ("both", "text"):
            unused.append("token_embedding.weight (the student inherits its text teacher's table)")
        mapped.pop("text.token_embedding.weight", None)
    report.unused = sorted(unused)
    load: dict[str, torch.Tensor] = {}
    mismatched: set[str] = set()
    for name, value in mapped.items():
        if not _in_towers(name, towers):
            continue
        if name not in own:
            report.unused.append(name)
        elif tuple(value.shape) != tuple(own[name].shape):
            report.mismatched.append(f"{name} {tuple(value.shape)} in the source, {tuple(own[name].shape)} here")
            mismatched.add(name)
        else:
            load[name] = value.to(own[name].dtype)
    report.not_loaded = sorted(n for n in own if _in_towers(n, towers) and n not in load and n not in report.new
                               and n not in mismatched and not _own_only(n, model))
    report.loaded = sorted(load)
    if towers != "both":  # the other tower's tensors (and the temperature) are not this init's business
        report.unused = [u for u in report.unused if _source_tower(u, kind) == towers]
    if strict and (report.not_loaded or report.unused or report.mismatched):
        hint = " (the source has a LayerNorm before the first block: set vision.ln_pre=true)" if any(
            "ln_pre" in u for u in report.unused) else ""
        raise InteropError(f"student.init (strict): {report.summary()}{hint}; size the student like the source "
                           "(student.model / student.overrides) or set student.init_strict=false")
    for name, value in load.items():
        target = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
        target.copy_(value)
    log.info("student.init: %s", report.summary())
    return report


def _source_tower(name: str, kind: str) -> str | None:
    """The tower a source tensor belongs to ("vision" / "text"), None for shared ones (the temperature)."""
    if kind == "timm" or name.startswith("visual."):
        return "vision"
    if name in ("logit_scale", "logit_bias"):
        return None
    return "text"
