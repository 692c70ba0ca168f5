"""Two gloo processes under torchrun give the losses of one process on the same global batch."""

import json
import os
import subprocess
import sys

import pytest


def logged(run_dir) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("batch_size, grad_accum", [(8, 1), (4, 2)])
def test_torchrun_two_ranks_match_one_process(tmp_path, shard_writer, recipe_writer, tiny_vision_teacher_dir,
                                               tiny_text_teacher_dir, batch_size, grad_accum):
    # Two shards of 8: each rank reads one; one process reads both. Full-image crops make every view
    # deterministic, and with p = 0 the loss is plain CLIP, which is invariant to the order of the 16 pairs.
    # With grad_accum=2 each rank reads its 8 pairs as two micro-batches of 4, and the feature-cached
    # accumulation still scores all 16 pairs against each other, with the gradients of the one-process batch.
    shards = shard_writer(tmp_path / "shards", num_shards=2, per_shard=8)
    common = {"data.num_samples": 16, "data.crop_scale": [1.0, 1.0], "data.ratio": [1.0, 1.0],
              "data.shuffle_buffer": 0, "objective.distill_fraction": 0.0, "train.steps": 3, "train.ckpt_every": 100,
              "optim.warmup_steps": 0}
    teachers = (tiny_vision_teacher_dir, tiny_text_teacher_dir, tmp_path / "runs")
    one = recipe_writer(tmp_path / "one.yaml", shards, *teachers, **common, **{"data.batch_size": 16, "name": "one"})
    two = recipe_writer(tmp_path / "two.yaml", shards, *teachers, **common,
                        **{"data.batch_size": batch_size, "train.grad_accum": grad_accum, "name": "two"})
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "sfclip.cli", "train", str(one)], check=True, env=env, capture_output=True,
                   timeout=600)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "sfclip.cli", "train", str(two)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = logged(tmp_path / "runs" / "one"), logged(tmp_path / "runs" / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in (1, 2, 3):  # step 1 checks the gathered loss; later steps check the averaged gradients too
        assert b[step]["contrastive_loss"] == pytest.approx(a[step]["contrastive_loss"], rel=1e-4, abs=1e-5), step
        assert b[step]["samples_seen"] == a[step]["samples_seen"] == 16 * step
