"""sfclip: train, evaluate and serve SF-CLIP vision-language models."""

from .checkpoint import load
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load", "__version__"]
