"""The task registry: what each task declares is what its runner takes, and the CLI, the training hook
and the docs all read it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sfclip.eval import tasks
from sfclip.eval.tasks import PREPROCESSING, TASKS, Task, preprocessing_arguments, task_arguments

ROOT = Path(__file__).resolve().parents[2]
ARGS = {"transform": {"transform"}, "mean_std": {"mean", "std"}}


@pytest.mark.parametrize("name", list(TASKS))
def test_each_task_takes_the_preprocessing_it_declares_and_not_the_other(name):
    declared = TASKS[name].preprocessing
    takes = set(task_arguments(name))
    assert ARGS[declared] <= takes
    assert not any(ARGS[other] & takes for other in PREPROCESSING if other != declared)


def test_preprocessing_arguments_build_the_transform_only_when_asked():
    built = []
    assert preprocessing_arguments("retrieval", lambda: built.append(1) or "T", [0.5] * 3, [0.2] * 3) == \
        {"transform": "T"}
    assert preprocessing_arguments("linear_segmentation", lambda: built.append(2), (0.5,) * 3, (0.2,) * 3) == \
        {"mean": [0.5] * 3, "std": [0.2] * 3}
    assert built == [1]
    with pytest.raises(ValueError, match="unknown eval task 'nope'"):
        preprocessing_arguments("nope", lambda: None, [], [])
    with pytest.raises(ValueError, match="preprocessing"):
        Task(lambda m, t: {}, "pixels", "")


def test_the_cli_offers_exactly_the_registered_tasks():
    from sfclip.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    task = next(a for a in sub.choices["eval"]._actions if a.dest == "task")
    assert list(task.choices) == list(TASKS)
    assert all(t.summary in task.help for t in TASKS.values())


@pytest.mark.parametrize("doc", ["README.md", "sfclip/eval/README.md"])
def test_the_docs_task_tables_list_exactly_the_registered_tasks(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    table = text[text.index("| task | data | metrics |"):].split("\n\n")[0]  # the table, up to a blank line
    assert re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M) == list(TASKS)


def test_the_training_hook_gives_each_task_its_declared_preprocessing(monkeypatch):
    from sfclip.data import DataConfig
    from sfclip.train.eval_hook import EvalHook, EvalHookConfig, EvalTaskConfig

    calls = {}
    monkeypatch.setattr(tasks, "evaluate", lambda task, model, tok, **kw: calls.update({task: kw}) or {"m": 1.0})
    hook = EvalHook(EvalHookConfig(tasks=[EvalTaskConfig(task=name) for name in TASKS]),
                    DataConfig(image_size=32, mean=[0.1, 0.2, 0.3]))
    assert hook.run(None, None, "cpu") == {f"eval/{name}/m": 1.0 for name in TASKS}
    for name, task in TASKS.items():
        given = set(calls[name]) & {"transform", "mean", "std"}
        assert given == ARGS[task.preprocessing], name
        if task.preprocessing == "mean_std":
            assert calls[name]["mean"] == [0.1, 0.2, 0.3]
