"""Launch environments: torchrun's variables win; under `srun` (one task per GPU) SLURM's are read instead.
No process is launched: the environment is set by hand and the process-group call is recorded."""

import os

import pytest
import torch

from sfclip.train import dist as sdist
from sfclip.train.dist import init_distributed, launch_env

SLURM = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
         "SLURM_JOB_NODELIST": "gpu[07-08]"}
KEYS = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", *SLURM, "SLURM_STEP_NUM_TASKS",
        "SLURM_STEP_NODELIST", "SLURM_NODELIST"]


def test_srun_tasks_get_torchrun_style_variables():
    calls = []

    def hostnames(nodes):
        calls.append(nodes)
        return ["gpu07", "gpu08"]

    env = launch_env(SLURM, hostnames)
    assert env == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07",
                   "MASTER_PORT": str(20000 + 123456 % 20000)}
    assert calls == ["gpu[07-08]"]
    # the step's own task count and node list win over the job's; a plain host needs no scontrol
    step = {**SLURM, "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu07"}
    assert launch_env(step, hostnames)["WORLD_SIZE"] == "4" and launch_env(step, hostnames)["MASTER_ADDR"] == "gpu07"
    assert len(calls) == 1
    # what the user set stays
    set_by_user = launch_env({**SLURM, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}, hostnames)
    assert "MASTER_ADDR" not in set_by_user and "MASTER_PORT" not in set_by_user


def test_torchrun_wins_and_a_plain_process_is_left_alone():
    assert launch_env({**SLURM, "RANK": "0", "WORLD_SIZE": "2"}) == {}  # srun ... torchrun: torchrun's ranks
    assert launch_env({"PATH": "/bin"}) == {}
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == {"RANK": "0", "WORLD_SIZE": "1",
                                                                     "LOCAL_RANK": "0"}


def test_a_node_list_without_scontrol_asks_for_master_addr(monkeypatch):
    def no_scontrol(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "scontrol")

    monkeypatch.setattr(sdist.subprocess, "run", no_scontrol)
    with pytest.raises(ValueError, match="gpu\\[07-08\\].*set MASTER_ADDR"):
        launch_env(SLURM)
    with pytest.raises(ValueError, match="set MASTER_ADDR"):  # no node list at all
        launch_env({k: v for k, v in SLURM.items() if k != "SLURM_JOB_NODELIST"})


def test_init_distributed_starts_the_group_from_slurms_variables(monkeypatch):
    for key in KEYS:  # recorded, so that what init_distributed writes into os.environ is undone afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for key, value in {**SLURM, "MASTER_ADDR": "gpu07"}.items():
        monkeypatch.setenv(key, value)
    calls = []
    monkeypatch.setattr(sdist.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(sdist.dist, "init_process_group", lambda *a, **kw: calls.append((a, kw)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = init_distributed("auto")
    assert (info.rank, info.local_rank, info.world_size, info.device) == (5, 1, 8, torch.device("cpu"))
    assert calls == [(("gloo",), {"rank": 5, "world_size": 8})]
    # written for the rest of the process (the CLI prints the summary on RANK 0 only; env:// reads them)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]) == ("5", "8", "gpu07")
    assert os.environ["MASTER_PORT"] == str(20000 + 123456 % 20000)
