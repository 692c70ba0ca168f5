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
with `run(model, tokenizer, ..., device="cpu", batch_size=...) -> dict[str, float]` and register it here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping

from torch import nn

from sfclip.eval import linear_probe, linear_segmentation, retrieval, segmentation, zeroshot

__all__ = ["TASKS", "evaluate", "task_arguments", "check_arguments"]

Runner = Callable[..., dict[str, float]]

TASKS: dict[str, Runner] = {
    "zeroshot_classification": zeroshot.run,
    "retrieval": retrieval.run,
    "linear_probe": linear_probe.run,
    "zeroshot_segmentation": segmentation.run,
    "linear_segmentation": linear_segmentation.run,
}


def task_arguments(task: str) -> list[str]:
    """The keyword arguments a task's runner takes (besides model and tokenizer)."""
    if task not in TASKS:
        raise ValueError(f"unknown eval task {task!r}; known: {sorted(TASKS)}")
    params = list(inspect.signature(TASKS[task]).parameters.values())[2:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


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
    return TASKS[task](model, tokenizer, **kwargs)
