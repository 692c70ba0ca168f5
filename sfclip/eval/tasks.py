"""The task registry and the one entry point that the CLI and the training hook call.

    from sfclip.eval import evaluate, image_transform
    metrics = evaluate("zeroshot_classification", model, tokenizer, data="imagenet/val",
                       classnames="imagenet1k", transform=image_transform(224, mean, std), device="cuda")

`evaluate(task, model, tokenizer, **kwargs)` forwards `kwargs` to the task's runner and returns its
`dict[str, float]`. Tasks and their runners (see each module for the arguments and the protocol):

- `zeroshot_classification` -> `zeroshot.run(model, tokenizer, data, *, transform, classnames, templates)`:
  acc1, acc5 (>= 5 classes), mean_per_class_recall
- `retrieval` -> `retrieval.run(model, tokenizer, data, *, transform, data_format, split, language)`:
  i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10, mean_recall
- `linear_probe` -> `linear_probe.run(model, tokenizer, train_data, test_data, *, transform, feature)`:
  acc1, acc5 (>= 5 classes), mean_per_class_recall
- `zeroshot_segmentation` -> `segmentation.run(model, tokenizer, data, *, classnames, mean, std, layout)`:
  miou, pixel_acc, iou/<class>
- `linear_segmentation` -> `linear_segmentation.run(model, tokenizer, data, *, classnames, mean, std)`:
  miou, pixel_acc, iou/<class>

Every runner also takes `device`, `batch_size`, `num_workers`, `progress` and `pictures_dir`, runs in eval
and inference mode, and restores the model's train/eval flags afterwards. To add a task, write a module
with `run(model, tokenizer, ..., device="cpu", batch_size=...) -> dict[str, float]` and register it here
as a `Task`: it declares the preprocessing it takes, which the CLI (`sfclip eval`) and the training hook
supply through `preprocessing_arguments`, and the line that `sfclip eval --help` shows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from sfclip.eval import linear_probe, linear_segmentation, retrieval, segmentation, zeroshot

__all__ = ["PREPROCESSING", "Task", "TASKS", "evaluate", "task_arguments", "check_arguments",
           "preprocessing_arguments"]

Runner = Callable[..., dict[str, float]]
# What a task takes of the student's preprocessing: "transform", the eval transform (PIL image -> tensor:
# resize, centre crop, normalize); "mean_std", the normalization only (dense tasks resize at their own scale).
PREPROCESSING = ("transform", "mean_std")


@dataclass(frozen=True)
class Task:
    """A registered evaluation: its runner, the preprocessing it takes and a one-line description."""

    run: Runner
    preprocessing: str
    summary: str

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"Task.preprocessing must be one of {PREPROCESSING}, got {self.preprocessing!r}")


TASKS: dict[str, Task] = {
    "zeroshot_classification": Task(zeroshot.run, "transform",
                                    "class names + prompt templates vs images: acc1, acc5, mean_per_class_recall"),
    "retrieval": Task(retrieval.run, "transform", "image <-> caption recall@1/5/10 both ways, mean_recall"),
    "linear_probe": Task(linear_probe.run, "transform",
                         "logistic regression on frozen image embeddings: acc1, acc5, mean_per_class_recall"),
    "zeroshot_segmentation": Task(segmentation.run, "mean_std",
                                  "patch tokens vs class-name text embeddings, sliding window: miou, pixel_acc"),
    "linear_segmentation": Task(linear_segmentation.run, "mean_std",
                                "a linear head on frozen patch tokens: miou, pixel_acc"),
}


def _task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"unknown eval task {task!r}; known: {sorted(TASKS)}")
    return TASKS[task]


def task_arguments(task: str) -> list[str]:
    """The keyword arguments a task's runner takes (besides model and tokenizer)."""
    params = list(inspect.signature(_task(task).run).parameters.values())[2:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def preprocessing_arguments(task: str, transform: Callable[[], Any], mean: Sequence[float],
                            std: Sequence[float]) -> dict[str, Any]:
    """The preprocessing arguments of `task`: `{"transform": transform()}` or `{"mean": ..., "std": ...}`.

    `transform` is called only for a task that takes one (building it may read a checkpoint).
    """
    if _task(task).preprocessing == "transform":
        return {"transform": transform()}
    return {"mean": list(mean), "std": list(std)}


def check_arguments(task: str, names: Iterable[str], spelled: Mapping[str, str] | None = None) -> None:
    """Raise ValueError for the first of `names` that the task's runner does not take, saying which tasks do.

    `spelled` maps an argument to how the caller wrote it (the CLI's `--language` for `language`).
    """
    known = task_arguments(task)
    for name in names:
        if name not in known:
            takers = [t for t in TASKS if name in task_arguments(t)]
            hint = f"only {', '.join(takers)} take it" if takers else f"it takes: {', '.join(known)}"
            given = (spelled or {}).get(name, repr(name))
            raise ValueError(f"task {task} does not take {given}; drop it ({hint})")


def evaluate(task: str, model: nn.Module, tokenizer, **kwargs) -> dict[str, float]:
    """Run one registered task; unknown task names, arguments the runner does not take and a batch size
    below 1 fail with a message naming them, before any work."""
    check_arguments(task, kwargs)
    batch_size = kwargs.get("batch_size", 1)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return TASKS[task].run(model, tokenizer, **kwargs)
