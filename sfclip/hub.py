"""Publishing a checkpoint on the Hugging Face Hub: `sfclip push CHECKPOINT org/name`, and its model card.

A pushed repo holds the checkpoint's inference files (`model.safetensors`, `config.yaml`, `tokenizer/`,
`manifest.json`; never `state.pt`, the optimizer state) plus a generated `README.md`: the model, its
teachers, the evaluation results measured for it and the resolved config. `sfclip.load("hf-hub:org/name")`
reads it back (`sfclip.checkpoint.hub_snapshot`). All files go up in one commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from . import __version__
from .checkpoint import CONFIG, HUB_PREFIX, STATE, checkpoint_step, resolve_checkpoint

__all__ = ["HubError", "push", "model_card", "eval_results", "read_results"]

log = logging.getLogger(__name__)

CARD = "README.md"


class HubError(OSError):
    """The Hub refused or failed an upload (no token, no write access, network); the message says which."""


def _run_dir(folder: Path) -> Path | None:
    """The run folder a training checkpoint (`<run>/checkpoints/step_N`) belongs to."""
    return folder.parent.parent if folder.parent.name == "checkpoints" else None


def eval_results(folder: str | Path) -> dict[str, tuple[float, int]]:
    """`eval/<task>/<metric>` -> (value, step): the newest evaluation at or before the checkpoint's step, from its
    run folder's `metrics.jsonl` (the training eval hook's results); {} when there is none."""
    folder = Path(folder)
    run = _run_dir(folder)
    path = run / "metrics.jsonl" if run is not None else None
    if path is None or not path.is_file():
        return {}
    last = checkpoint_step(folder)
    found: dict[str, tuple[float, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill mid-write
        step = int(row.get("step", 0))
        if last is not None and step > last:
            continue  # logged by a later checkpoint of the run
        for key, value in row.items():
            if key.startswith("eval/") and isinstance(value, (int, float)):
                found[key] = (float(value), step)
    return found


def read_results(paths: Sequence[str | Path]) -> list[dict]:
    """CLIP_benchmark-format result records (`sfclip eval --output`) from JSON files."""
    records = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: not a JSON result file ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
            raise ValueError(f"{path}: not a CLIP_benchmark result (no \"metrics\" object); write one with "
                             "`sfclip eval ... --output`")
        records.append(record)
    return records


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _prefix(teacher: Any) -> str:
    if teacher.get("kind") != "text":
        return "-"
    prefix = teacher.get("prefix")
    return "the source's own" if prefix is None else repr(str(prefix))


def _alias(name: str, metrics: dict) -> bool:
    """CLIP_benchmark's name of a retrieval metric whose sfclip name is in the same record (one row, not two)."""
    for theirs, ours in (("text_retrieval_recall@", "i2t_r"), ("image_retrieval_recall@", "t2i_r")):
        if name.startswith(theirs) and f"{ours}{name[len(theirs):]}" in metrics:
            return True
    return False


def model_card(folder: str | Path, repo_id: str, results: Sequence[dict] = ()) -> str:
    """The README.md of a pushed checkpoint: what it is, how to load it, its teachers, its measured evaluation
    results (the run's eval hook, plus CLIP_benchmark-format `results` records from `sfclip eval --output`) and
    its resolved config."""
    folder = Path(folder)
    config_text = (folder / CONFIG).read_text(encoding="utf-8")
    cfg = OmegaConf.load(folder / CONFIG)
    model = OmegaConf.select(cfg, "student.model") or "custom"
    teachers = list(OmegaConf.select(cfg, "objective.teachers") or [])
    step = checkpoint_step(folder)
    lines = ["---", "library_name: sfclip", "pipeline_tag: zero-shot-image-classification",
             "tags: [sfclip, clip, sf-clip, vision-language, knowledge-distillation]", "---", "",
             f"# {repo_id}", "",
             f"A CLIP-style image-text model (student `{model}`) trained with sfclip {__version__}"
             + (f", checkpoint of step {step}" if step is not None else "") + ".", "",
             "```python", "import sfclip", "", f'model, tokenizer, transform = sfclip.load("{HUB_PREFIX}{repo_id}")',
             "```", "", "## Teachers", ""]
    if teachers:
        lines += _table(["name", "kind", "source", "layers", "text prefix", "weight"],
                        [[t.get("name"), t.get("kind"), f"`{t.get('source')}`", list(t.get("layers") or []) or "last",
                          _prefix(t), t.get("weight")] for t in teachers])
    else:
        lines.append("None: plain contrastive (CLIP) training.")
    lines += ["", "## Evaluation", ""]
    hook = eval_results(folder)
    if hook:
        lines += ["Measured during training (the run's `metrics.jsonl`):", ""]
        lines += _table(["task / metric", "value", "step"],
                        [[key.removeprefix("eval/"), f"{value:.4f}", at] for key, (value, at) in sorted(hook.items())])
        lines.append("")
    if results:
        lines += ["Measured with `sfclip eval`:", ""]
        lines += _table(["dataset", "task", "language", "metric", "value"],
                        [[r.get("dataset"), r.get("task"), r.get("language", "en"), name, f"{float(value):.4f}"]
                         for r in results for name, value in sorted(r.get("metrics", {}).items())
                         if isinstance(value, (int, float)) and not _alias(name, r.get("metrics", {}))])
        lines.append("")
    if not hook and not results:
        lines += ["No evaluation results were recorded for this checkpoint.", ""]
    lines += ["## Config", "", "The resolved run config (`config.yaml`):", "", "```yaml", config_text.rstrip(), "```",
              ""]
    return "\n".join(lines)


def push(checkpoint: str | Path, repo_id: str, *, private: bool = False, results: Sequence[str | Path] = (),
         message: str = "", token: str | None = None, api: Any = None) -> str:
    """Upload a checkpoint (a checkpoint folder, or a run folder: its newest complete one) to the Hub repo
    `repo_id`, created if missing, with a generated model card; returns the commit's URL.

    `results`: CLIP_benchmark JSON files (`sfclip eval --output`) to add to the card. `api`: an `HfApi` (tests).
    """
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{repo_id!r} is not a Hub repo id: give <org or user>/<name>")
    folder = resolve_checkpoint(checkpoint)
    card = model_card(folder, repo_id, read_results(results))
    from huggingface_hub import CommitOperationAdd, HfApi

    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name != STATE and f.name != CARD)
    operations = [CommitOperationAdd(path_in_repo=f.relative_to(folder).as_posix(), path_or_fileobj=str(f))
                  for f in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card.encode("utf-8")))
    api = api if api is not None else HfApi(token=token)
    step = checkpoint_step(folder)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=operations,
                                 commit_message=message or f"sfclip {__version__}: "
                                 + (f"step {step} of " if step is not None else "") + f"{folder}")
    except Exception as exc:  # auth, permission, network and server errors alike: one message
        raise HubError(f"push to {repo_id}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]} (log in "
                       "with `hf auth login` or set HF_TOKEN, with write access to the repo)") from exc
    url = str(getattr(info, "commit_url", "") or f"https://huggingface.co/{repo_id}")
    log.info("pushed %s (%d files) to %s", folder, len(operations), url)
    return url
