"""Logging with a rank prefix, and one small metrics interface: JSONL always, TensorBoard / W&B optional."""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LogConfig", "setup_logging", "MetricLogger", "peak_rss_mb"]


@dataclass
class LogConfig:
    every_steps: int = 10
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "sfclip"
    progress: bool = True  # a progress bar on rank 0

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ValueError(f"log.every_steps must be >= 1, got {self.every_steps}")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a trainer started by
    a large parent would report the parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup_logging(rank: int, log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Root logger: `[rank N] time level name: message` to stderr (rank 0 at INFO, others WARNING) and file."""
    fmt = logging.Formatter(f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_sfclip", False):
            root.removeHandler(h)
    stream = logging.StreamHandler(sys.stderr)
    stream.setLevel(level if rank == 0 else logging.WARNING)
    handlers = [stream]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        h._sfclip = True
        root.addHandler(h)
    root.setLevel(level)


class MetricLogger:
    """`log(step, metrics)` to `metrics.jsonl` (always), TensorBoard and W&B (when asked and installed).

    The W&B run starts at `open_wandb(run_id)` (the trainer calls it once it knows whether it resumes, with the
    run id its checkpoint stored, so that a resumed run continues the same W&B run), or at the first `log`.
    """

    def __init__(self, run_dir: Path, cfg: LogConfig, config_dict: dict | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.run_dir, self.cfg, self.config_dict = Path(run_dir), cfg, config_dict
        self.path = self.run_dir / "metrics.jsonl"
        self.tb = self.wandb = None
        self._wandb_module = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("log.tensorboard=true needs tensorboard: pip install 'sfclip[tensorboard]'") from None
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if cfg.wandb:
            try:  # checked here, before any teacher or data loads; the run itself starts in open_wandb
                import wandb
            except ImportError:
                raise ImportError("log.wandb=true needs wandb: pip install 'sfclip[wandb]'") from None
            self._wandb_module = wandb

    def open_wandb(self, run_id: str = "") -> None:
        """Start the W&B run (once; no-op without log.wandb): a new one, or the run `run_id` continued."""
        if self._wandb_module is None or self.wandb is not None:
            return
        self.wandb = self._wandb_module.init(project=self.cfg.wandb_project, name=self.run_dir.name,
                                             config=self.config_dict, dir=str(self.run_dir), id=run_id or None,
                                             resume="allow")

    @property
    def wandb_run_id(self) -> str:
        """The W&B run's id ("" without W&B), stored in each checkpoint."""
        return str(getattr(self.wandb, "id", "") or "")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.open_wandb()
        clean = {k: (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else str(v))
                 for k, v in metrics.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        for k, v in clean.items():
            if isinstance(v, float):
                if self.tb is not None:
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in clean.items() if isinstance(v, float)}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
