"""Evaluation: pure metrics (`metrics`) apart from runners that feed them data and a model.

Entry point: `evaluate(task, model, tokenizer, **kwargs) -> dict[str, float]` over the `TASKS` registry
(see `sfclip.eval.tasks`); results are written in CLIP_benchmark's JSON format by `sfclip.eval.results`.
"""

from sfclip.eval.images import CLIP_MEAN, CLIP_STD, image_transform
from sfclip.eval.results import format_table, print_table, read_results, result_record, write_result
from sfclip.eval.tasks import TASKS, evaluate

__all__ = ["TASKS", "evaluate", "image_transform", "CLIP_MEAN", "CLIP_STD", "result_record", "write_result",
           "read_results", "format_table", "print_table"]
