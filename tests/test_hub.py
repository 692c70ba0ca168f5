"""The Hugging Face Hub: `sfclip.load("hf-hub:org/name")` from a hub cache laid out here (offline), and
`sfclip push` against a recorded API: the files it uploads and the model card it writes."""

from __future__ import annotations

import json
import shutil
import types

import huggingface_hub
import pytest
import torch

import sfclip
from sfclip.checkpoint import CheckpointError
from sfclip.cli import main
from sfclip.config import load_config
from sfclip.hub import model_card, push
from sfclip.models import create_model
from sfclip.tokenizer import load_tokenizer
from sfclip.train.state import save_training_checkpoint

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def run(tmp_path, tiny_vision_teacher_dir, tiny_text_teacher_dir, pair_shards, recipe_writer):
    """A run folder: a training checkpoint at step 8 with the run's config, and eval results in metrics.jsonl."""
    recipe = recipe_writer(tmp_path / "r.yaml", pair_shards, tiny_vision_teacher_dir, tiny_text_teacher_dir,
                           tmp_path / "runs")
    cfg = load_config(recipe)
    torch.manual_seed(0)
    model, tok = create_model("test-tiny"), load_tokenizer(tiny_text_teacher_dir, context_length=16)
    run_dir = tmp_path / "runs" / "tiny"
    save_training_checkpoint(run_dir, 8, model, tok, cfg, {"step": 8}, keep_last=3)
    rows = [{"step": 4, "loss": 3.0, "lr": 1e-3}, {"step": 4, "eval/scenes/acc1": 0.5},
            {"step": 8, "eval/scenes/acc1": 0.625, "eval/scenes/acc5": 1.0},
            {"step": 12, "eval/scenes/acc1": 0.875}]  # after the checkpoint: not its result
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir, model


def hub_cache(root, repo_id, files_from):
    """The layout huggingface_hub's cache has after a download: models--org--name/{refs/main,snapshots/<sha>/}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(files_from, repo / "snapshots" / SHA, ignore=shutil.ignore_patterns("state.pt"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    return repo


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads both variables when it is imported: set what it read, too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return root


def test_load_from_the_hub_cache_offline(run, offline_cache):
    run_dir, model = run
    hub_cache(offline_cache, "org/tiny-sfclip", run_dir / "checkpoints" / "step_00000008")
    loaded, tok, transform = sfclip.load("hf-hub:org/tiny-sfclip")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert tok(["a red cat"])["input_ids"].shape == (1, 16)
    assert sfclip.load(f"hf-hub:org/tiny-sfclip@{SHA}")[0] is not None  # a pinned revision
    with pytest.raises(CheckpointError, match="hf-hub:org/missing.*HF_HUB_OFFLINE"):
        sfclip.load("hf-hub:org/missing")
    with pytest.raises(CheckpointError, match="not hf-hub:<org>/<name>"):
        sfclip.load("hf-hub:no-org")


def test_a_corrupt_hub_snapshot_is_refused(run, offline_cache):
    run_dir, _ = run
    repo = hub_cache(offline_cache, "org/bad", run_dir / "checkpoints" / "step_00000008")
    weights = repo / "snapshots" / SHA / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        sfclip.load("hf-hub:org/bad")


class RecordingApi:
    """Stands in for `HfApi`: records the repo it creates and every file of the commit."""

    def __init__(self):
        self.repos, self.files, self.messages = [], {}, []

    def create_repo(self, repo_id, private=False, exist_ok=False):
        self.repos.append((repo_id, private, exist_ok))

    def create_commit(self, repo_id, operations, commit_message=""):
        self.messages.append(commit_message)
        for op in operations:
            src = op.path_or_fileobj
            self.files[op.path_in_repo] = src if isinstance(src, bytes) else open(src, "rb").read()
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{SHA}")


def test_push_uploads_the_inference_files_and_a_model_card(run, tmp_path):
    run_dir, _ = run
    result = tmp_path / "retrieval.json"
    result.write_text(json.dumps({"dataset": "flickr30k", "model": "x", "task": "retrieval", "language": "en",
                                  "metrics": {"i2t_r1": 0.25, "t2i_r1": 0.5, "text_retrieval_recall@1": 0.25,
                                              "image_retrieval_recall@1": 0.5}}))
    api = RecordingApi()
    url = push(run_dir, "org/tiny-sfclip", private=True, results=[result], api=api)
    assert url.endswith(SHA) and api.repos == [("org/tiny-sfclip", True, True)]
    ckpt = run_dir / "checkpoints" / "step_00000008"
    assert sorted(api.files) == sorted(["README.md", "config.yaml", "manifest.json", "model.safetensors",
                                        *[f"tokenizer/{p.name}" for p in (ckpt / "tokenizer").iterdir()]])
    assert "state.pt" not in api.files  # the optimizer state stays home
    assert api.files["model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
    card = api.files["README.md"].decode()
    assert 'sfclip.load("hf-hub:org/tiny-sfclip")' in card and "step 8" in card
    assert "| dino | vision |" in card and "| bert | text |" in card  # the teachers
    assert "| scenes/acc1 | 0.6250 | 8 |" in card and "| scenes/acc5 | 1.0000 | 8 |" in card
    assert "0.8750" not in card  # logged after this checkpoint
    assert "| flickr30k | retrieval | en | i2t_r1 | 0.2500 |" in card
    assert "text_retrieval_recall@1" not in card  # CLIP_benchmark's name of the same number: one row
    assert "```yaml" in card and "distill_fraction: 0.5" in card  # the resolved config


def test_a_checkpoint_without_results_says_so(run):
    run_dir, _ = run
    (run_dir / "metrics.jsonl").unlink()
    card = model_card(run_dir / "checkpoints" / "step_00000008", "org/x")
    assert "No evaluation results were recorded" in card


def test_push_cli_card_only_and_errors(run, capsys, monkeypatch):
    run_dir, _ = run
    assert main(["push", str(run_dir), "org/tiny", "--card-only"]) == 0
    assert "# org/tiny" in capsys.readouterr().out

    class Refusing(RecordingApi):
        def create_repo(self, *a, **kw):
            raise RuntimeError("401 Client Error: Unauthorized\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: Refusing())
    assert main(["push", str(run_dir), "org/tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "push to org/tiny" in err[0] and "401" in err[0] and "HF_TOKEN" in err[0]
    assert main(["push", str(run_dir), "not-a-repo-id"]) == 2
    assert "not a Hub repo id" in capsys.readouterr().err
