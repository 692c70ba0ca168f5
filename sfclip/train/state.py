"""Training checkpoints: the student folder plus `state.pt`, rotated, with a `latest` pointer.

`state.pt` holds only tensors, numbers, strings and containers of them, so it loads with
`torch.load(weights_only=True)`: optimizer, scheduler and grad-scaler state, counters, every RNG, the
objective's masking RNG and the data position (epoch, batch within the epoch).
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_dir, atomic_write_text, save_student

__all__ = ["save_training_checkpoint", "find_resume", "load_training_state", "rng_state", "set_rng_state"]

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict:
    """Python, NumPy (legacy global) and torch RNG states in weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": _to_lists(random.getstate()), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def save_training_checkpoint(run_dir: Path, step: int, student, tokenizer, run_config, state: dict,
                             keep_last: int) -> Path:
    """Write `checkpoints/step_N/` atomically, point `checkpoints/latest` at it, drop all but the last K."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / f"step_{step:08d}"
    with atomic_dir(final) as tmp:
        save_student(tmp, student, tokenizer, run_config)
        torch.save(state, tmp / "state.pt")
    atomic_write_text(ckpt_root / "latest", final.name + "\n")
    steps = sorted((int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, old in steps[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint saved: %s", final)
    return final


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """`latest` -> the run's newest complete checkpoint (None on a fresh run); otherwise a folder path."""
    if not resume:
        return None
    if resume == "latest":
        pointer = Path(run_dir) / "checkpoints" / "latest"
        if not pointer.is_file():
            return None
        path = pointer.parent / pointer.read_text().strip()
    else:
        path = Path(resume)
    if not (path / "state.pt").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"train.resume={resume!r}: {path} is not a complete training checkpoint "
                                "(model.safetensors and state.pt expected)")
    return path


def load_training_state(path: Path, map_location="cpu") -> dict:
    return torch.load(Path(path) / "state.pt", map_location=map_location, weights_only=True)
