"""Training checkpoints: the student folder plus `state.pt`, rotated, with a `latest` pointer.

`state.pt` holds only tensors, numbers, strings and containers of them, so it loads with
`torch.load(weights_only=True)`: optimizer, scheduler and grad-scaler state, counters, every RNG, the
objective's masking RNG and the data position (epoch, batch within the epoch, and every data worker's
stream position, `data_positions` (world, workers), which makes resume exact).
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import (
    CheckpointError,
    atomic_dir,
    atomic_write_text,
    checkpoint_step,
    disk_full,
    fault_point,
    list_checkpoints,
    newest_checkpoint,
    save_student,
    verify_checkpoint,
    write_manifest,
)

__all__ = ["save_training_checkpoint", "find_resume", "load_training_state", "rng_state", "set_rng_state"]

log = logging.getLogger(__name__)


def rng_state() -> dict:
    """Python, NumPy (legacy global) and torch RNG states in weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]
    state = {"python": _to_lists(random.getstate()), "numpy": numpy_state, "torch": torch.get_rng_state()}
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
    """Write `checkpoints/step_N/` atomically, point `checkpoints/latest` at it, drop all but the last K.

    Step folders newer than N belong to a run this one superseded (it started again, or resumed from an
    earlier checkpoint): they are renamed `superseded_step_M` so that `train.resume=latest` continues
    this run. A full disk raises `CheckpointError` with the previous checkpoint left whole.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / f"step_{step:08d}"
    try:
        with atomic_dir(final) as tmp:
            save_student(tmp, student, tokenizer, run_config)
            torch.save(state, tmp / "state.pt")
            write_manifest(tmp, training=True)  # last: a folder without it is not trusted
    except (OSError, RuntimeError) as exc:
        previous = next((p for p in list_checkpoints(ckpt_root) if p.name.startswith("step_")), None)
        if not (disk_full(exc) or _no_room_for(previous, ckpt_root)):
            raise
        raise CheckpointError(f"disk full while writing checkpoint {final} ({type(exc).__name__}: {exc}); "
                              f"the previous checkpoint {previous or '(none)'} is intact. Free space under "
                              f"{ckpt_root} and restart with train.resume=latest") from exc
    for newer in list_checkpoints(ckpt_root):
        if (checkpoint_step(newer) or 0) > step and newer.name.startswith("step_"):
            aside = newer.with_name(f"superseded_{newer.name}")
            shutil.rmtree(aside, ignore_errors=True)
            newer.rename(aside)
            log.warning("%s is newer than this run's step %d (a run superseded by this one): renamed to %s so "
                        "that train.resume=latest continues this run; delete it when not needed", newer, step,
                        aside.name)
    atomic_write_text(ckpt_root / "latest", final.name + "\n")
    fault_point("after_pointer")
    steps = [p for p in list_checkpoints(ckpt_root) if p.name.startswith("step_")]
    for old in steps[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint saved: %s", final)
    return final


def _no_room_for(previous: Path | None, root: Path) -> bool:
    """Less free space than the previous checkpoint takes (torch.save reports a full disk without errno)."""
    if previous is None:
        return False
    size = sum(f.stat().st_size for f in previous.rglob("*") if f.is_file())
    return shutil.disk_usage(root).free < size


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """`latest` -> the run's newest checkpoint that verifies (None on a fresh run); otherwise a folder path.

    `latest` does not trust the `checkpoints/latest` pointer: a kill between a step folder's rename and
    the pointer's write leaves it behind, so the step folders themselves are scanned.
    """
    if not resume:
        return None
    if resume == "latest":
        return newest_checkpoint(Path(run_dir) / "checkpoints", training=True)
    path = Path(resume)
    try:
        verify_checkpoint(path, training=True)
    except CheckpointError as exc:
        raise CheckpointError(f"train.resume={resume!r}: {exc}") from None
    return path


def load_training_state(path: Path, map_location="cpu") -> dict:
    """`state.pt` of a checkpoint, loaded with `weights_only=True`."""
    try:
        return torch.load(Path(path) / "state.pt", map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - EOFError, zip errors, unpickling errors alike
        raise CheckpointError(f"{Path(path) / 'state.pt'} cannot be loaded: {type(exc).__name__}: {exc}") from None
