"""The run config: every component's dataclass composed into one, loaded from a YAML recipe + dotted overrides.

OmegaConf structured configs check keys and types against the dataclasses; `__post_init__` checks values.
Any failure becomes one `ConfigError` line naming the key, before any heavy work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .build import StudentConfig
from .data.config import DataConfig
from .train.eval_hook import EvalHookConfig
from .objective import ObjectiveConfig
from .train.logs import LogConfig
from .train.optim import OptimConfig

__all__ = ["ConfigError", "TrainConfig", "RunConfig", "load_config", "to_yaml"]


class ConfigError(ValueError):
    """A recipe or override that cannot work; the message names the key."""


@dataclass
class TrainConfig:
    # Duration: set one; it is resolved once into optimizer steps.
    steps: int = 0
    epochs: float = 0.0
    samples: int = 0
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    grad_accum: int = 1  # micro-batches per optimizer step (each one's contrastive loss uses its own negatives)
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


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Recipe YAML (optional) + `key.sub=value` overrides -> a validated RunConfig."""
    base = OmegaConf.structured(RunConfig)
    layers = []
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe {path} does not exist")
        layers.append(OmegaConf.load(path))
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


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
