"""Model sizes as a plain registry: `list_models()`, `model_config(name)`, `create_model(name, **overrides)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .clip import SFCLIP, ModelConfig
from .text import TextConfig
from .vit import VisionConfig

__all__ = ["register_model", "list_models", "model_config", "create_model", "resolve_model_config"]

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a preset under its function name, with underscores read as dashes."""
    _REGISTRY[fn.__name__.replace("_", "-")] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str) -> ModelConfig:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())} "
                         "(`sfclip models` describes them)")
    cfg = _REGISTRY[name]()
    cfg.name = name
    return cfg


def resolve_model_config(name: str, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """A preset with nested (`text={"layers": 6}`) or dotted (`{"text.layers": 6}`) overrides, type-checked."""
    base = OmegaConf.structured(model_config(name))
    nested, dotted = {}, []
    for k, v in (overrides or {}).items():
        if "." in k:
            dotted.append(f"{k}={v}")
        else:
            nested[k] = v
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(nested), OmegaConf.from_dotlist(dotted))
    except OmegaConfBaseException as e:  # they carry the full key; keep just the first line
        raise ValueError(f"bad override for model {name!r}: {str(e).splitlines()[0]}") from None
    return cast(ModelConfig, OmegaConf.to_object(merged))  # a structured merge of ModelConfig


def create_model(name: str, **overrides: Any) -> SFCLIP:
    """Build a registered student, e.g. `create_model("vit-b-16", text={"vocab_size": 250037})`."""
    return SFCLIP(resolve_model_config(name, overrides))


def _cfg(embed: int, image: int, patch: int, vw: int, vl: int, vh: int, tw: int, tl: int, th: int,
         ctx: int = 77, vocab: int = 49408) -> ModelConfig:
    return ModelConfig(
        embed_dim=embed,
        vision=VisionConfig(image_size=image, patch_size=patch, width=vw, layers=vl, heads=vh),
        text=TextConfig(context_length=ctx, vocab_size=vocab, width=tw, layers=tl, heads=th),
    )


@register_model
def vit_l_14() -> ModelConfig:
    return _cfg(768, 224, 14, 1024, 24, 16, 768, 12, 12)


@register_model
def vit_b_16() -> ModelConfig:
    """The paper's student: ViT-B/16 at 224 px, 12-layer 512-wide text tower, 512-d joint space."""
    return _cfg(512, 224, 16, 768, 12, 12, 512, 12, 8)


@register_model
def vit_s_16() -> ModelConfig:
    return _cfg(384, 224, 16, 384, 12, 6, 384, 12, 6)


@register_model
def vit_t_16() -> ModelConfig:
    return _cfg(256, 224, 16, 192, 12, 3, 256, 12, 4)


@register_model
def vit_demo_8() -> ModelConfig:
    """The CPU demo's student: 64 px, patch 8 (an 8x8 grid), narrow and shallow."""
    return _cfg(128, 64, 8, 192, 6, 3, 192, 4, 3, ctx=32)


@register_model
def test_tiny() -> ModelConfig:
    """For tests: 32 px, patch 8, two layers, 32 wide."""
    return _cfg(24, 32, 8, 32, 2, 2, 32, 2, 2, ctx=16, vocab=128)
