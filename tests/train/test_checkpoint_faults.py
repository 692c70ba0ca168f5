"""Kills at each point of the checkpoint protocol, a lost `latest` pointer, corrupt and superseded
checkpoints, a full disk: what resume and `sfclip.load` then do."""

import errno
import os
import shutil
import signal
import subprocess
import sys

import pytest

import sfclip
from sfclip.checkpoint import CheckpointError, list_checkpoints, recover_checkpoints
from sfclip.config import load_config
from sfclip.train import state as state_mod
from sfclip.train.loop import train
from sfclip.train.state import find_resume


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shard_writer, recipe_writer, tiny_vision_teacher_dir, tiny_text_teacher_dir):
    """A recipe and a finished 8-step run with checkpoints at steps 4 and 8 (copied by `run`)."""
    root = tmp_path_factory.mktemp("faults")
    shards = shard_writer(root / "shards")
    recipe = recipe_writer(root / "r.yaml", shards, tiny_vision_teacher_dir, tiny_text_teacher_dir, root / "runs",
                           **{"train.steps": 8, "train.ckpt_every": 4, "train.keep_last": 3})
    train(load_config(recipe))
    return recipe, root / "runs" / "tiny"


@pytest.fixture
def run(trained, tmp_path):
    """(recipe, run folder): a fresh copy of the trained run for each test."""
    recipe, run_dir = trained
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(run_dir, copy)
    text = recipe.read_text().replace(str(run_dir.parent), str(copy.parent))
    (tmp_path / "r.yaml").write_text(text)
    return tmp_path / "r.yaml", copy


def ckpt(run_dir, step):
    return run_dir / "checkpoints" / f"step_{step:08d}"


def names(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


_SAVE = """
import sys, torch
from pathlib import Path
from omegaconf import OmegaConf
from sfclip.checkpoint import load
from sfclip.train.state import save_training_checkpoint
src, run_dir, step = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
model, tok, _ = load(src)
state = torch.load(src / "state.pt", weights_only=True)
save_training_checkpoint(run_dir, step, model, tok, OmegaConf.load(src / "config.yaml"), state, keep_last=3)
"""


def killed_save(run_dir, step, point):
    """Save step `step` (a copy of step 8) in a process SIGKILLed at `point` of the protocol."""
    env = dict(os.environ, SFCLIP_FAULT=point, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _SAVE, str(ckpt(run_dir, 8)), str(run_dir), str(step)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.mark.parametrize("point, step, left, resumed", [
    # killed after the temporary folder is whole, before its rename: the previous checkpoint stays newest
    ("after_tmp_write", 12, ".step_00000012.", 8),
    # killed after the rename, before the pointer is written: the new folder is whole and is used
    ("after_rename", 12, "step_00000012", 12),
    # killed between the two renames of a replacement: `.step_N.old` stands in for step_N
    ("mid_replace", 8, ".step_00000008.old", 8),
    # killed after the pointer, before the rotation: nothing is missing
    ("after_pointer", 12, "step_00000012", 12),
])
def test_a_kill_at_each_point_of_the_checkpoint_protocol(run, point, step, left, resumed):
    recipe, run_dir = run
    killed_save(run_dir, step, point)
    assert any(n.startswith(left) for n in names(run_dir)), names(run_dir)
    if point == "mid_replace":
        assert not ckpt(run_dir, 8).exists()  # the old code's dangling `latest` state
    # sfclip.load reads without repairing anything
    model, tok, _ = sfclip.load(run_dir)
    assert model is not None and tok is not None
    expected = list_checkpoints(run_dir / "checkpoints")[0]
    assert find_resume(run_dir, "latest") == expected and f"{resumed:08d}" in expected.name
    # the trainer repairs the folder first, then resumes from that step
    recover_checkpoints(run_dir / "checkpoints")
    assert not [n for n in names(run_dir) if n.startswith(".")], names(run_dir)
    assert find_resume(run_dir, "latest") == ckpt(run_dir, resumed)


@pytest.mark.slow
def test_a_kill_mid_replacement_then_a_real_resume(run):
    recipe, run_dir = run
    killed_save(run_dir, 8, "mid_replace")
    out = train(load_config(recipe, ["train.resume=latest", "train.steps=10"]))
    assert out["step"] == 10
    assert "resumed from" in (run_dir / "train.log").read_text().split("restored")[-1]
    assert names(run_dir) == ["latest", "step_00000004", "step_00000008", "step_00000010"]


@pytest.mark.slow
def test_resume_latest_without_the_pointer_finds_the_newest_checkpoint(run):
    recipe, run_dir = run
    (run_dir / "checkpoints" / "latest").unlink()  # a kill between the folder's rename and the pointer's write
    out = train(load_config(recipe, ["train.resume=latest", "train.steps=12"]))
    assert out["step"] == 12
    assert f"resumed from {ckpt(run_dir, 8)} at step 8" in (run_dir / "train.log").read_text()
    # rotation kept the older checkpoints: the run continued, it did not start again from step 0
    assert names(run_dir) == ["latest", "step_00000004", "step_00000008", "step_00000012"]


@pytest.mark.slow
def test_the_same_step_is_saved_once(run):
    recipe, run_dir = run
    inode = ckpt(run_dir, 8).stat().st_ino
    out = train(load_config(recipe, ["train.resume=latest"]))  # resuming a finished run
    assert out["step"] == 8 and ckpt(run_dir, 8).stat().st_ino == inode  # not rewritten
    # a stop on a checkpoint step (max_steps_this_run=4 with ckpt_every=4) writes step 4 once
    shutil.rmtree(run_dir)
    train(load_config(recipe, ["train.max_steps_this_run=4"]))
    log = (run_dir / "train.log").read_text()
    assert log.count("checkpoint saved") == 1 and "step 4 is already saved" in log


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_is_skipped_by_resume_with_one_line(run):
    recipe, run_dir = run
    (ckpt(run_dir, 8) / "state.pt").write_bytes(b"")
    out = train(load_config(recipe, ["train.resume=latest", "train.steps=6"]))
    assert out["step"] == 6
    log = (run_dir / "train.log").read_text()
    assert f"{ckpt(run_dir, 8) / 'state.pt'} is corrupt: 0 bytes" in log
    assert f"resumed from {ckpt(run_dir, 4)} at step 4" in log
    # the newer (corrupt) checkpoint is put aside once this run saves, so it is never taken again
    assert names(run_dir) == ["latest", "step_00000004", "step_00000006", "superseded_step_00000008"]
    assert find_resume(run_dir, "latest") == ckpt(run_dir, 6)


def test_an_explicit_corrupt_resume_fails_naming_the_file_and_leaves_config_yaml(run):
    recipe, run_dir = run
    before = (run_dir / "config.yaml").read_text()
    (ckpt(run_dir, 8) / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="step_00000008/model.safetensors is corrupt"):
        train(load_config(recipe, [f"train.resume={ckpt(run_dir, 8)}", "optim.lr=0.5"]))
    assert (run_dir / "config.yaml").read_text() == before  # validated first, written after


def test_leftovers_of_killed_writes_are_removed_at_start(run):
    recipe, run_dir = run
    (run_dir / "checkpoints" / ".step_00000012.abcd.tmp").mkdir()
    shutil.copytree(ckpt(run_dir, 4), run_dir / "checkpoints" / ".step_00000004.old")
    (run_dir / "checkpoints" / ".latest.tmp").write_text("step_00000012\n")
    train(load_config(recipe, ["train.resume=latest"]))
    assert names(run_dir) == ["latest", "step_00000004", "step_00000008"]


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(run, monkeypatch):
    recipe, run_dir = run

    def full(obj, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(state_mod.torch, "save", full)
    with pytest.raises(CheckpointError, match=r"disk full while writing checkpoint .*step_00000010 .*"
                                              r"the previous checkpoint .*step_00000008 is intact"):
        train(load_config(recipe, ["train.resume=latest", "train.steps=10"]))
    monkeypatch.undo()
    assert names(run_dir) == ["latest", "step_00000004", "step_00000008"]  # no partial folder left
    assert find_resume(run_dir, "latest") == ckpt(run_dir, 8)
    assert sfclip.load(run_dir)[1] is not None


def test_an_unwritable_output_folder_fails_before_loading_anything(run, tmp_path, monkeypatch):
    recipe, _ = run
    (tmp_path / "a_file").write_text("")
    import sfclip.train.loop as loop

    monkeypatch.setattr(loop, "build_teachers", lambda *a, **k: pytest.fail("teachers loaded"))
    from sfclip.config import ConfigError

    with pytest.raises(ConfigError, match=f"output folder {tmp_path / 'a_file' / 'tiny'} is not writable"):
        train(load_config(recipe, [f"output_dir={tmp_path / 'a_file'}"]))
