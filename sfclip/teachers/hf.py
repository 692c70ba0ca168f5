"""Teachers from transformers models, by hub id or local folder.

Vision: DINOv2 (with or without registers), ViT, and the vision towers of CLIP / SigLIP checkpoints.
Text: BERT / XLM-R / E5-style encoders. A text teacher's prefix and pooling come from its `TeacherConfig`
when set there, else from the source: a folder may carry `sfclip_teacher.json` with
`{"text_prefix": "query: ", "pooling": "mean" | "cls"}` (the offline converters write one for E5), and
E5 hub ids have a known default (`text_options`).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import TextTeacher, VisionTeacher, mean_pool

__all__ = ["HFVisionTeacher", "HFTextTeacher", "load_hf_vision", "load_hf_text", "check_local_source",
           "text_options"]

log = logging.getLogger(__name__)

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _average_layers(hidden_states: tuple[torch.Tensor, ...], layers: list[int]) -> torch.Tensor:
    """Mean of instance-normalized hidden states of the chosen layers (data2vec's multi-layer target)."""
    picked = [hidden_states[i] for i in layers]
    return torch.stack([F.layer_norm(h.float(), h.shape[-1:]) for h in picked]).mean(0)


def check_local_source(name: str, source: str) -> None:
    """Raise ValueError when `source` is a local path (it starts with `/`, `.` or `~`, or has more than
    one `/`, which no hub id has) that does not exist. Otherwise transformers would read it as a hub id and
    fail with a message about repo ids. Other sources (`timm:`, `offline:`, hub ids) pass unchecked.

    ValueError, not FileNotFoundError: `build_teacher` rewraps OSErrors as hub-loading failures.
    """
    if source.startswith(("timm:", "offline:")) or source == "efficientnet-lite0":
        return
    path = source.removeprefix("hf:")
    local = path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path
    if local and not Path(path).expanduser().exists():
        raise ValueError(f"teacher {name!r}: folder {path} does not exist; point its source at an existing "
                         "transformers folder, a hub id (hf:<org>/<name>) or a packaged teacher "
                         "(offline:<name>)")


def _teacher_meta(source: str) -> dict:
    meta = Path(source) / "sfclip_teacher.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


# Hub ids whose text convention is known: (pattern, prefix, pooling). E5 was trained with "query: " /
# "passage: " prefixes and mean pooling (its model card); a caption is a query. `offline:multilingual-e5-*`
# matches too, and agrees with the sfclip_teacher.json its converter writes.
_KNOWN_TEXT = ((re.compile(r"^(hf:|offline:)?(intfloat/)?(multilingual-)?e5-(small|base|large)(-v2)?$"), "query: ",
                "mean"),)


def text_options(source: str, prefix: str | None = None, pooling: str = "auto") -> tuple[str, str]:
    """The (prefix, pooling) a text teacher from `source` uses: the config's value when set (`prefix` not None,
    `pooling` not "auto"), else the folder's `sfclip_teacher.json`, else the known default of the hub id
    (E5: "query: ", mean), else no prefix and mean pooling. Reads one small file at most, loads no model."""
    path = source.removeprefix("hf:")
    meta = _teacher_meta(path) if not path.startswith("offline:") and Path(path).expanduser().is_dir() else {}
    known = next(((pre, pool) for pattern, pre, pool in _KNOWN_TEXT if pattern.match(source)), ("", "mean"))
    if prefix is None:
        prefix = str(meta.get("text_prefix", known[0]))
    if pooling == "auto":
        pooling = str(meta.get("pooling", known[1]))
    return prefix, pooling


class HFVisionTeacher(VisionTeacher):
    """A transformers image encoder returning its class token and its patch tokens."""

    def __init__(self, name: str, model, image_size: int, mean, std, layers: list[int] | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        cfg = model.config
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        super().__init__(name, cfg.hidden_size, image_size, patch, tuple(mean), tuple(std), dtype)
        if image_size % patch:
            raise ValueError(f"teacher {name!r}: image size {image_size} is not a multiple of its patch size {patch}")
        self.model = model
        self.layers = list(layers or [])
        self._interp = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        self.freeze()

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        kwargs = {"interpolate_pos_encoding": True} if self._interp else {}
        out = self.model(pixel_values=images, output_hidden_states=bool(self.layers), **kwargs)
        x = _average_layers(out.hidden_states, self.layers) if self.layers else out.last_hidden_state  # (B, P+N, D)
        n = (images.shape[-2] // self.patch_size) * (images.shape[-1] // self.patch_size)
        prefix = x.shape[1] - n  # class token plus any register tokens
        patch = x[:, prefix:]
        if prefix > 0:
            cls = x[:, 0]
        elif getattr(out, "pooler_output", None) is not None:
            cls = out.pooler_output  # SigLIP: no class token, an attention-pooled summary instead
        else:
            cls = patch.mean(1)
        return {"cls": cls, "patch": patch}


class HFTextTeacher(TextTeacher):
    """A transformers text encoder returning per-token features and a pooled vector."""

    def __init__(self, name: str, model, tokenizer, pooling: str = "mean", prefix: str = "",
                 layers: list[int] | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(name, model.config.hidden_size, tokenizer, dtype)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"teacher {name!r}: pooling must be 'mean' or 'cls', got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.prefix = prefix
        self.layers = list(layers or [])
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 512))
        self.freeze()

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=bool(self.layers))
        x = _average_layers(out.hidden_states, self.layers) if self.layers else out.last_hidden_state  # (B, T, D)
        pooled = mean_pool(x, attention_mask) if self.pooling == "mean" else x[:, 0]
        return {"tokens": x, "pooled": pooled}

    def input_embeddings(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight.detach()


def _vision_model(source: str):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(source)
    model = AutoModel.from_pretrained(source)
    if hasattr(config, "vision_config"):  # a CLIP / SigLIP pair: keep only its image tower
        model = model.vision_model
    return model


def load_hf_vision(name: str, source: str, image_size: int = 0, layers: list[int] | None = None,
                   dtype: torch.dtype = torch.float32) -> HFVisionTeacher:
    """Load a transformers image encoder; mean/std and default size come from its image processor config."""
    from transformers import AutoImageProcessor

    check_local_source(name, source)
    model = _vision_model(source)
    mean, std, size = _IMAGENET_MEAN, _IMAGENET_STD, 224
    try:
        proc = AutoImageProcessor.from_pretrained(source)
        mean, std = proc.image_mean, proc.image_std
        size = _processor_size(proc) or size
    except (OSError, ValueError) as e:
        log.warning("teacher %s: no image processor config in %s (%s); using ImageNet mean/std", name, source, e)
    return HFVisionTeacher(name, model, image_size or size, mean, std, layers, dtype)


def _processor_size(proc) -> int | None:
    """The input size an image processor crops to (dicts in transformers 4, SizeDict objects in 5)."""
    for attr in ("crop_size", "size"):
        spec = getattr(proc, attr, None)
        if isinstance(spec, int):
            return spec
        for key in ("height", "shortest_edge"):
            value = spec.get(key) if isinstance(spec, dict) else getattr(spec, key, None)
            if value:
                return int(value)
    return None


def load_hf_text(name: str, source: str, layers: list[int] | None = None,
                 dtype: torch.dtype = torch.float32, prefix: str | None = None,
                 pooling: str = "auto") -> HFTextTeacher:
    """Load a transformers text encoder and its fast tokenizer; `prefix` / `pooling` as in `text_options`."""
    from transformers import AutoModel, AutoTokenizer

    check_local_source(name, source)
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    pooler = {"add_pooling_layer": False} if _has_pooler(source) else {}
    model = AutoModel.from_pretrained(source, **pooler)
    prefix, pooling = text_options(source, prefix, pooling)
    return HFTextTeacher(name, model, tokenizer, pooling, prefix, layers, dtype)


def _has_pooler(source: str) -> bool:
    """BERT-family configs build a pooler we never use; skip it so its weights are not reported missing."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source).model_type in ("bert", "xlm-roberta", "roberta")
