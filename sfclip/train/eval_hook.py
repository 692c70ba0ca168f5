"""Periodic evaluation during training (zero-shot classification and any other `sfclip.eval` task).

A recipe lists tasks, each with the arguments its runner takes:

    eval:
      every_steps: 1000
      tasks:
        - {task: zeroshot_classification, name: imagenet, args: {data: /data/imagenet/val, classnames: imagenet1k}}
        - {task: retrieval, name: coco, args: {data: /data/coco/karpathy.json}}

Metrics are logged as `eval/<name>/<metric>`. The hook gives each task the preprocessing its registry entry
(`sfclip.eval.tasks.TASKS`) asks for, the student's eval transform or its mean/std, so a recipe never
repeats them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["EvalTaskConfig", "EvalHookConfig", "EvalHook"]

log = logging.getLogger(__name__)


@dataclass
class EvalTaskConfig:
    task: str = "zeroshot_classification"
    name: str = ""  # label in metric names; defaults to the task
    args: dict[str, Any] = field(default_factory=dict)  # forwarded to the runner


@dataclass
class EvalHookConfig:
    every_steps: int = 0  # 0 = only at the end (if at_end)
    at_end: bool = True
    batch_size: int = 64
    tasks: list[EvalTaskConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise ValueError(f"eval.every_steps must be >= 0, got {self.every_steps}")


class EvalHook:
    """Decides when to evaluate and runs the configured tasks on the (unwrapped) student."""

    def __init__(self, cfg: EvalHookConfig, data_cfg) -> None:
        self.cfg = cfg
        self.image_size, self.mean, self.std = data_cfg.image_size, list(data_cfg.mean), list(data_cfg.std)
        if cfg.tasks:
            from ..eval.tasks import TASKS

            for t in cfg.tasks:
                if t.task not in TASKS:
                    raise ValueError(f"eval.tasks: unknown task {t.task!r}; known: {sorted(TASKS)}")

    def due(self, step: int, total_steps: int) -> bool:
        if not self.cfg.tasks:
            return False
        if self.cfg.every_steps and step % self.cfg.every_steps == 0:
            return True
        return self.cfg.at_end and step == total_steps

    def run(self, model, tokenizer, device: torch.device) -> dict[str, float]:
        from ..data.transforms import eval_transform
        from ..eval.tasks import evaluate, preprocessing_arguments

        results: dict[str, float] = {}
        for t in self.cfg.tasks:
            student = preprocessing_arguments(t.task, lambda: eval_transform(self.image_size, self.mean, self.std),
                                              self.mean, self.std)
            kwargs = {"device": device, "batch_size": self.cfg.batch_size, "progress": False, **student, **t.args}
            name = t.name or t.task
            try:
                metrics = evaluate(t.task, model, tokenizer, **kwargs)
            except Exception:  # a broken eval set must not kill a long run (logged with its traceback)
                log.exception("eval task %s failed; training continues", name)
                continue
            results.update({f"eval/{name}/{k}": float(v) for k, v in metrics.items()})
        return results
