"""Student checkpoints on disk: safetensors weights, the resolved config, the tokenizer; atomic writes.

A checkpoint folder holds `model.safetensors` (student weights only, never a teacher's), `config.yaml`
(the whole resolved run config, or at least `model:`), `tokenizer/` and, for training checkpoints,
`state.pt` (optimizer, scheduler, counters, RNG, data position; loaded with `weights_only=True`).
Folders are written under a temporary name and renamed into place, so a kill at any moment leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from .models import SFCLIP, ModelConfig
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["save_student", "load_student", "load", "image_stats", "atomic_dir", "atomic_write_text"]

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.yaml", "tokenizer"


class atomic_dir:
    """`with atomic_dir(final) as tmp:` write into `tmp`; on success it replaces `final` in one rename."""

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final)

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".tmp", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        for f in self.tmp.rglob("*"):  # data reaches the disk before the rename makes it visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.final, old)
            os.replace(self.tmp, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.final)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _model_config_of(cfg) -> ModelConfig:
    """The ModelConfig inside a run config (or a bare model config) loaded from YAML."""
    node = cfg.model_config if "model_config" in cfg else cfg
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), node))


def save_student(folder: str | Path, model: SFCLIP, tokenizer: Tokenizer | None, run_config=None) -> None:
    """Write weights, config and tokenizer into `folder` (the caller makes it atomic)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "sfclip": "student"})
    cfg = OmegaConf.create({"model_config": OmegaConf.structured(model.cfg)})
    if run_config is not None:
        cfg = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(OmegaConf.structured(run_config))), cfg)
    OmegaConf.save(cfg, folder / CONFIG)
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER)


def load_student(folder: str | Path, map_location: str | torch.device = "cpu") -> SFCLIP:
    """Rebuild the student from its saved config and load its weights (no pickled code is ever run)."""
    folder = Path(folder)
    for name in (WEIGHTS, CONFIG):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not an sfclip checkpoint: {name} is missing")
    model = SFCLIP(_model_config_of(OmegaConf.load(folder / CONFIG)))
    state = load_file(str(folder / WEIGHTS), device=str(map_location))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {folder} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(map_location).eval()


def _resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (its latest checkpoint), or a `checkpoints/` folder."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    for pointer in (path / "checkpoints" / "latest", path / "latest"):
        if pointer.is_file():
            return pointer.parent / pointer.read_text().strip()
    raise FileNotFoundError(f"no sfclip checkpoint at {path}: expected {WEIGHTS} or a run folder with checkpoints/latest")


def load(path: str | Path, device: str | torch.device = "cpu"):
    """`model, tokenizer, transform = sfclip.load(path)`: ready for `encode_image` / `encode_text`.

    `path` is a checkpoint folder or a run folder (its latest checkpoint is used). The transform maps a PIL
    image to the normalized (3, S, S) tensor the model expects.
    """
    folder = _resolve_checkpoint(path)
    model = load_student(folder, device)
    tokenizer = load_tokenizer(folder / TOKENIZER) if (folder / TOKENIZER).is_dir() else None
    from .data.transforms import eval_transform

    return model, tokenizer, eval_transform(model.cfg.vision.image_size, *image_stats(folder))


def image_stats(path: str | Path) -> tuple[list[float], list[float]]:
    """The (mean, std) the checkpoint's student was trained with (OpenAI CLIP's when not recorded)."""
    from .data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    cfg = OmegaConf.load(_resolve_checkpoint(path) / CONFIG)
    if "data" in cfg:
        return list(cfg.data.mean), list(cfg.data.std)
    return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
