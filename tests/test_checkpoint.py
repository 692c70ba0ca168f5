"""Checkpoint files: manifest verification, fallback to the newest intact checkpoint, one clear error per
unusable checkpoint (naming the file), a pointer that cannot leave its folder, folder permissions."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch

import sfclip
from sfclip.checkpoint import (
    CheckpointError,
    newest_checkpoint,
    read_pointer,
    verify_checkpoint,
    write_manifest,
)
from sfclip.models import create_model
from sfclip.tokenizer import load_tokenizer
from sfclip.train.state import save_training_checkpoint


@pytest.fixture
def run(tmp_path, tiny_text_teacher_dir):
    """A run folder with training checkpoints at steps 4 and 8 of the tiny student (no training)."""
    torch.manual_seed(0)
    model, tok = create_model("test-tiny"), load_tokenizer(tiny_text_teacher_dir, context_length=16)
    for step in (4, 8):
        save_training_checkpoint(tmp_path / "run", step, model, tok, None, {"step": step}, keep_last=3)
    return tmp_path / "run"


def ckpt(run, step):
    return run / "checkpoints" / f"step_{step:08d}"


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name, damage", [("model.safetensors", truncate), ("state.pt", truncate),
                                          ("state.pt", lambda p: p.write_bytes(b""))])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_intact_one_naming_the_file(run, name, damage, caplog):
    damage(ckpt(run, 8) / name)
    with pytest.raises(CheckpointError, match=f"step_00000008/{name} is corrupt"):
        verify_checkpoint(ckpt(run, 8), training=True)
    with caplog.at_level(logging.WARNING, logger="sfclip.checkpoint"):
        assert newest_checkpoint(run / "checkpoints", training=True) == ckpt(run, 4)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"step_00000008/{name}" in warnings[0] and "step_00000004" in warnings[0]


def test_a_corrupt_file_without_a_manifest_is_still_caught(run):
    # A checkpoint written by an older sfclip has no manifest: the formats' own checks apply.
    (ckpt(run, 8) / "manifest.json").unlink()
    verify_checkpoint(ckpt(run, 8), training=True)
    truncate(ckpt(run, 8) / "state.pt", 0.9)
    with pytest.raises(CheckpointError, match="state.pt is corrupt"):
        verify_checkpoint(ckpt(run, 8), training=True)
    truncate(ckpt(run, 8) / "model.safetensors", 0.9)
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        verify_checkpoint(ckpt(run, 8))


def test_load_names_the_bad_file_and_falls_back_for_a_run_folder(run):
    truncate(ckpt(run, 8) / "model.safetensors")
    with pytest.raises(CheckpointError, match="step_00000008/model.safetensors is corrupt: .* bytes"):
        sfclip.load(ckpt(run, 8))
    model, tok, _ = sfclip.load(run)  # the run's newest intact checkpoint
    assert tok is not None and model.logit_scale is not None
    truncate(ckpt(run, 4) / "model.safetensors")
    with pytest.raises(CheckpointError, match="no usable checkpoint in .*step_00000008.*step_00000004"):
        sfclip.load(run)


def test_load_without_a_tokenizer_says_so(run):
    shutil.rmtree(ckpt(run, 8) / "tokenizer")
    write_manifest(ckpt(run, 8), training=True)  # a hand-assembled folder: consistent, but no tokenizer
    with pytest.raises(CheckpointError, match="step_00000008/tokenizer is missing"):
        sfclip.load(ckpt(run, 8))


def test_load_weights_of_another_model_size_names_the_mismatch(run, tmp_path, tiny_text_teacher_dir):
    wider = create_model("test-tiny", vision={"width": 48})
    tok = load_tokenizer(tiny_text_teacher_dir, context_length=16)
    save_training_checkpoint(tmp_path / "wide", 4, wider, tok, None, {"step": 4}, keep_last=3)
    shutil.copy(ckpt(tmp_path / "wide", 4) / "model.safetensors", ckpt(run, 8) / "model.safetensors")
    write_manifest(ckpt(run, 8), training=True)
    with pytest.raises(CheckpointError, match=r"another model size.*visual\.\S+ is \(.*48.*\) in the file"):
        sfclip.load(ckpt(run, 8))


def test_a_pointer_outside_the_checkpoints_folder_is_refused(run):
    pointer = run / "checkpoints" / "latest"
    assert read_pointer(run / "checkpoints") == ckpt(run, 8)
    for bad in ("../../elsewhere", "/etc", "..", "step_00000004/../../x"):
        pointer.write_text(bad + "\n")
        with pytest.raises(CheckpointError, match="not a folder inside"):
            sfclip.load(run)


def test_checkpoint_folders_follow_the_umask(tmp_path, tiny_text_teacher_dir):
    old = os.umask(0o022)
    try:
        save_training_checkpoint(tmp_path / "run", 4, create_model("test-tiny"),
                                 load_tokenizer(tiny_text_teacher_dir, context_length=16), None, {"step": 4}, 1)
    finally:
        os.umask(old)
    folder = ckpt(tmp_path / "run", 4)
    assert folder.stat().st_mode & 0o777 == 0o755  # readable by the other users of a shared cluster
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
