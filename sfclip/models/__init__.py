"""Student models: plain single-device modules (no loss, data, DDP or optimizer code)."""

from .clip import SFCLIP, ModelConfig
from .heads import DistillHead, HeadConfig
from .registry import create_model, list_models, model_config, register_model, resolve_model_config
from .text import TextConfig, TextTransformer
from .vit import VisionConfig, VisionTransformer

__all__ = [
    "SFCLIP", "ModelConfig", "DistillHead", "HeadConfig", "TextConfig", "TextTransformer", "VisionConfig",
    "VisionTransformer", "create_model", "list_models", "model_config", "register_model", "resolve_model_config",
]
