"""What clusters do to a run: SIGTERM to the whole process group (SLURM, Kubernetes, spot preemption)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sfclip.config import load_config
from sfclip.train.loop import train


def logged_steps(run_dir) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_checkpoints_and_resumes(
        tmp_path, pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir, recipe_writer):
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs", **{"data.workers": 2, "train.steps": 2000, "train.ckpt_every": 1000})
    run_dir = tmp_path / "runs" / "tiny"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # Its own session, as a batch scheduler starts a job: the signal reaches the trainer and its workers.
    proc = subprocess.Popen([sys.executable, "-m", "sfclip.cli", "train", str(recipe)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(logged_steps(run_dir)) < 2 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.decode()
    assert proc.returncode == 0, text[-3000:]
    assert "killed by signal" not in text
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert len(ckpts) == 1, ckpts
    stopped_at = int(ckpts[0].split("_")[1])
    assert stopped_at >= 2 and stopped_at == max(logged_steps(run_dir))

    out = train(load_config(recipe, ["train.resume=latest", "train.max_steps_this_run=2"]))
    assert out["step"] == stopped_at + 2
    resumed = f"resumed from {run_dir / 'checkpoints' / ckpts[0]} at step {stopped_at}"
    assert resumed in (run_dir / "train.log").read_text()
