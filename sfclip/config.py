"""The run config: every component's dataclass composed into one, loaded from a YAML recipe + dotted overrides.

OmegaConf structured configs check keys and types against the dataclasses; `__post_init__` checks values.
Any failure becomes one `ConfigError` line naming the key, before any heavy work starts. What depends on the
machine rather than on the recipe (is CUDA there? do the local teacher folders exist?) is checked apart, by
`check_runnable`, so that `sfclip config` can still print a cluster recipe on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .build import StudentConfig
from .data.config import DataConfig
from .errors import ConfigError
from .objective import ObjectiveConfig
from .train.eval_hook import EvalHookConfig
from .train.logs import LogConfig
from .train.optim import OptimConfig

__all__ = ["ConfigError", "TrainConfig", "RunConfig", "load_config", "check_runnable", "to_yaml", "resolve_recipe"]


@dataclass
class TrainConfig:
    # Duration: set one; it is resolved once into optimizer steps.
    steps: int = 0
    epochs: float = 0.0
    samples: int = 0
    precision: str = "auto"  # auto (bf16 where sfclip.precision says native, incl. SFCLIP_BF16) | fp32 | bf16 | fp16
    # Micro-batches per optimizer step. The contrastive loss still scores the whole step's batch: a first pass
    # without gradients embeds every micro-batch, and each micro-batch is then scored against all of them
    # (OpenCLIP's feature-cached accumulation: the big batch's loss and gradients, for one extra forward).
    grad_accum: int = 1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    ckpt_every: int = 1000  # steps; a checkpoint is also written at the end and on SIGTERM / Ctrl-C
    keep_last: int = 3
    resume: str = ""  # "" | latest | a checkpoint folder
    max_bad_steps: int = 5  # non-finite losses in a row before the run stops
    max_steps_this_run: int = 0  # stop (with a checkpoint) after this many steps in this process; 0 = off

    def __post_init__(self) -> None:
        if sum(bool(x) for x in (self.steps, self.epochs, self.samples)) > 1:
            raise ValueError("train: set only one of train.steps, train.epochs, train.samples")
        if min(self.steps, self.epochs, self.samples) < 0:
            raise ValueError("train: train.steps, train.epochs and train.samples must be >= 0")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.grad_accum < 1:
            raise ValueError(f"train.grad_accum must be >= 1, got {self.grad_accum}")
        if self.keep_last < 1:
            raise ValueError(f"train.keep_last must be >= 1, got {self.keep_last}")
        if self.ckpt_every < 1:
            raise ValueError(f"train.ckpt_every must be >= 1, got {self.ckpt_every}")
        if self.max_bad_steps < 1:
            raise ValueError(f"train.max_bad_steps must be >= 1, got {self.max_bad_steps} "
                             "(1 stops the run at the first non-finite loss)")
        if self.device not in ("auto", "cpu", "cuda") and not _is_cuda_index(self.device):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:<index>, got {self.device!r}")


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


@dataclass
class RunConfig:
    name: str = "sfclip"
    output_dir: str = "runs"
    student: StudentConfig = field(default_factory=StudentConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalHookConfig = field(default_factory=EvalHookConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _first_line(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe file: the path when it exists, else the packaged recipe of that name (`sfclip recipes`)."""
    from .recipes import find_recipe, list_recipes

    path = Path(recipe)
    if path.is_file():
        return path
    packaged = find_recipe(str(recipe))
    if packaged is not None:
        return packaged
    raise ConfigError(f"recipe {path} does not exist, and no packaged recipe has that name (packaged: "
                      f"{', '.join(list_recipes())}; `sfclip recipes` describes them)")


def _load_recipe(path: Path) -> DictConfig:
    path = resolve_recipe(path)
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or _first_line(e)
        raise ConfigError(f"recipe {path} is not valid YAML: {problem}{where}; fix the file there") from None
    if not isinstance(node, DictConfig):
        kind = "a list" if OmegaConf.is_list(node) else f"{type(node).__name__}"
        raise ConfigError(f"recipe {path}: the top level is {kind}, but a recipe is a mapping of sections "
                          "(name:, student:, data:, optim:, train:, ...)")
    return node


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Recipe YAML (optional; a path or a packaged recipe's name) + `key.sub=value` overrides -> a validated
    RunConfig."""
    base = OmegaConf.structured(RunConfig)
    layers = []
    if recipe is not None:
        layers.append(_load_recipe(Path(recipe)))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=3e-4)")
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(base, *layers)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"config key {key!r}: {_first_line(e)}" if key else _first_line(e)) from None
    except ValueError as e:  # a component's __post_init__ check
        raise ConfigError(_first_line(e)) from None


def check_runnable(cfg: RunConfig) -> None:
    """Raise `ConfigError` when this machine cannot start the run: no training duration, CUDA asked of a torch
    without it, or a teacher folder that does not exist. Cheap: call it before creating anything."""
    t = cfg.train
    if not (t.steps or t.epochs or t.samples):
        raise ConfigError("no training duration: train.steps, train.epochs and train.samples are all 0; "
                          "set one of them (e.g. train.steps=1000)")
    if t.device.startswith("cuda"):
        import torch

        if torch.version.cuda is None:
            raise ConfigError(f"train.device={t.device} but this torch ({torch.__version__}) is a CPU-only "
                              "build; use train.device=cpu (or auto), or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={t.device} but torch sees no CUDA device; use train.device=cpu "
                              "(or auto), or check the driver and CUDA_VISIBLE_DEVICES")
    from .teachers.hf import check_local_source

    for teacher in cfg.objective.teachers:
        if cfg.data.targets and teacher.kind == "vision":
            continue  # a target cache may stand in for it; build_teachers says so if it does not
        try:
            check_local_source(teacher.name, teacher.source)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
