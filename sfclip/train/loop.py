"""The training loop: one process or many under torchrun, checkpoints, resume, logs and eval hooks.

The loop only sees steps: the duration (steps, epochs or samples) is resolved once. Each step runs
`grad_accum` micro-batches through the objective (the module DDP wraps; with several, the contrastive term
scores the whole step's batch, see `_train_step`), skips the update if any rank's loss is not finite,
clips, steps AdamW and the schedule, and clamps the temperature.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import time
from collections import Counter

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from ..build import build_objective, build_teachers
from ..checkpoint import recover_checkpoints
from ..config import ConfigError, RunConfig, to_yaml
from ..data import SKIP_REASONS
from ..data.loader import build_train_loader
from ..precision import native_bf16
from ..teachers.cached import CachedVisionTeacher
from .dist import all_gather_rows, all_reduce_min, barrier, init_distributed
from .eval_hook import EvalHook
from .logs import MetricLogger, peak_rss_mb, setup_logging
from .optim import build_optimizer, lr_lambda
from .state import find_resume, load_training_state, rng_state, save_training_checkpoint, set_rng_state

__all__ = ["Trainer", "train", "TrainingDiverged"]

log = logging.getLogger(__name__)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


class _LoaderStopped(Exception):
    """The data loader failed after a stop was requested (a worker killed by the same signal)."""


def _check_writable(folder) -> None:
    """Fail at once, before teachers or data are loaded, if the run folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output folder {folder} is not writable ({exc.strerror or exc}); set output_dir (or name) "
                          "to a folder this user can write") from None


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):  # teacher_image {size: tensor}, targets {teacher: {field: tensor}}
            out[k] = _to_device(v, device)
        else:
            out[k] = v
    return out


class Trainer:
    """`Trainer(cfg).fit()`; see `sfclip train --help` for the command line."""

    def __init__(self, cfg: RunConfig, eval_hook: EvalHook | None = None) -> None:
        if not (cfg.train.steps or cfg.train.epochs or cfg.train.samples):
            raise ValueError("no training duration: set train.steps, train.epochs or train.samples")
        if cfg.train.grad_accum > 1 and cfg.objective.image_view == "shared":
            raise ConfigError("train.grad_accum > 1 caches each micro-batch's contrastive features, which "
                              "objective.image_view=shared draws with a fresh mask in every pass; use "
                              "objective.image_view=separate (or train.grad_accum=1)")
        self.cfg = cfg
        self.dist = init_distributed(cfg.train.device)
        self.device = self.dist.device
        self.run_dir = cfg.run_dir
        if self.dist.is_main:
            _check_writable(self.run_dir)
        setup_logging(self.dist.rank, self.run_dir / "train.log" if self.dist.is_main else None)
        torch.manual_seed(cfg.train.seed + self.dist.rank)
        self.precision = self._resolve_precision(cfg.train.precision)

        # With a target cache, the vision teachers it serves are weightless stand-ins (checked against the run).
        teachers = build_teachers(cfg.objective, cfg.student, cfg.data.targets, cfg.data)
        self.objective, self.tokenizer = build_objective(cfg.objective, cfg.student, cfg.data.mean, cfg.data.std,
                                                         teachers)
        self.objective.reseed(cfg.objective.seed + self.dist.rank)
        # The loader's config, derived (cfg stays as validated): each live vision teacher's view is rendered
        # in the data workers; a cached teacher needs none.
        self.data_cfg = dataclasses.replace(cfg.data, teacher_sizes=sorted(
            {t.image_size for t in self.objective.vision_teachers.values() if not isinstance(t, CachedVisionTeacher)}))
        self.objective.to(self.device)
        self.student = self.objective.student
        self.model = self._wrap(self.objective)
        self.optimizer = build_optimizer(self.student, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        self.loader, self.data_info = None, None
        self.total_steps = 0
        self.step, self.epoch, self.batch_in_epoch, self.samples_seen = 0, 0, 0, 0
        self.bad_steps_total, self.bad_in_a_row = 0, 0
        self.skipped = Counter()
        self.stop_requested = False
        self.eval_hook = eval_hook if eval_hook is not None else EvalHook(cfg.eval, cfg.data)
        self.metrics = MetricLogger(self.run_dir, cfg.log, config_dict=dataclasses.asdict(cfg),
                                    enabled=self.dist.is_main)
        self.last_checkpoint = None
        self.wandb_run_id = ""  # the W&B run a resumed checkpoint was logging to
        self._saved_step = None  # the step whose checkpoint is already in this run's folder
        self.data_positions: list[int] = []  # per logical data worker: stream position after its last batch

    # -- setup ------------------------------------------------------------------------------------
    def _resolve_precision(self, p: str) -> str:
        """"auto" follows `sfclip.precision` (the one rule, `SFCLIP_BF16` included); fp16 needs a GPU."""
        if p == "auto":
            return "bf16" if native_bf16(self.device) else "fp32"
        if p == "fp16" and self.device.type == "cpu":
            raise ConfigError("train.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        return p

    def _wrap(self, objective):
        if self.dist.world_size == 1:
            return objective
        ignore = [f"teachers.{n}" for n, _ in objective.teachers.named_parameters()]
        ignore += [f"teachers.{n}" for n, _ in objective.teachers.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(objective, ignore)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(objective, device_ids=ids, broadcast_buffers=False)

    def _resolve_duration(self) -> int:
        t, per_step = self.cfg.train, self.cfg.data.batch_size * self.dist.world_size * self.cfg.train.grad_accum
        if t.steps:
            return t.steps
        if t.epochs:
            return max(1, math.ceil(t.epochs * self.data_info.num_batches / t.grad_accum))
        if t.samples:
            return max(1, math.ceil(t.samples / per_step))
        raise ValueError("no training duration: set train.steps, train.epochs or train.samples")

    def _build_loader(self, positions: torch.Tensor | None = None) -> None:
        """`positions`: the checkpoint's (world, workers) stream positions, for an exact resume."""
        row = None
        if positions is not None and positions.shape[0] == self.dist.world_size and self.batch_in_epoch:
            row = [int(p) for p in positions[self.dist.rank].tolist()]
        self.loader, self.data_info = build_train_loader(self.data_cfg, self.tokenizer, self.dist.rank,
                                                         self.dist.world_size, self.epoch, self.batch_in_epoch,
                                                         start_positions=row)
        self.data_positions = row if row is not None and len(row) == self.data_info.workers else \
            [0] * self.data_info.workers

    def _schedule(self):
        fn = lr_lambda(self.cfg.optim, self.total_steps)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, fn)

    # -- checkpoints ------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "samples_seen": self.samples_seen, "bad_steps_total": self.bad_steps_total,
                "skipped": dict(self.skipped), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "objective_rng": self.objective.rng_state(), "world_size": self.dist.world_size,
                "wandb_run_id": self.metrics.wandb_run_id}

    def save(self) -> None:
        """Checkpoint this step (once: a stop on a checkpoint step, or a finished run resumed, saves nothing new)."""
        positions = all_gather_rows(torch.tensor(self.data_positions, dtype=torch.int64))  # (world, workers)
        if self.dist.is_main and self._saved_step == self.step:
            log.info("step %d is already saved in %s", self.step, self.last_checkpoint)
        elif self.dist.is_main:
            state = {**self._state(), "data_positions": positions}
            self.last_checkpoint = save_training_checkpoint(self.run_dir, self.step, self.student, self.tokenizer,
                                                            self.cfg, state, self.cfg.train.keep_last)
            self._saved_step = self.step
        barrier()

    def _resume(self) -> torch.Tensor | None:
        """Load the checkpoint `train.resume` names; returns its data stream positions (None if it has none)."""
        path = find_resume(self.run_dir, self.cfg.train.resume)
        if path is None:
            if self.cfg.train.resume:
                log.info("train.resume=%s: no checkpoint yet in %s, starting fresh", self.cfg.train.resume,
                         self.run_dir)
            return None
        from safetensors.torch import load_file

        state = load_training_state(path)
        self.student.load_state_dict(load_file(str(path / "model.safetensors"), device=str(self.device)))
        if state["world_size"] != self.dist.world_size:
            log.warning("resuming a %d-rank run on %d ranks: data order and masks will differ from the original run",
                        state["world_size"], self.dist.world_size)
        self.scaler.load_state_dict(state["scaler"])
        # Loaded after the scheduler exists: building LambdaLR rewrites every group's lr.
        self._pending = (state["optimizer"], state["scheduler"])
        for k in ("step", "epoch", "batch_in_epoch", "samples_seen", "bad_steps_total"):
            setattr(self, k, state[k])
        self.skipped = Counter(state["skipped"])
        self.wandb_run_id = str(state.get("wandb_run_id", ""))
        set_rng_state(state["rng"])
        self.objective.set_rng_state(state["objective_rng"])
        self.last_checkpoint = path
        if path.parent.resolve() == (self.run_dir / "checkpoints").resolve():
            self._saved_step = self.step
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)
        return state.get("data_positions")

    # -- the loop ---------------------------------------------------------------------------------
    def _batches(self):
        """Micro-batches across epochs, tracking the position for exact resume."""
        while True:
            self.data_info.set_epoch(self.epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.data_positions = [0] * len(self.data_positions)

    def _install_signal_handlers(self) -> dict:
        """Stop cleanly on SIGTERM / SIGINT; returns the handlers they replace."""
        def handler(signum, frame):
            log.warning("signal %d: finishing this step, saving a checkpoint and stopping", signum)
            self.stop_requested = True
        previous = {}
        with contextlib.suppress(ValueError):  # not in the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, handler)
        return previous

    def _setup(self) -> None:
        """Repair the checkpoints folder, resume, build the data and the schedule; write the run's config."""
        if self.dist.is_main:  # what a killed checkpoint write left, before anyone reads the folder
            recover_checkpoints(self.run_dir / "checkpoints")
        barrier()
        self._pending = None
        self._build_loader(self._resume())
        self.total_steps = self._resolve_duration()
        if self.dist.is_main:  # only once the resume and the data are known to work
            (self.run_dir / "config.yaml").write_text(to_yaml(self.cfg))
            self.metrics.open_wandb(self.wandb_run_id)  # a resumed run continues its W&B run
        self.scheduler = self._schedule()
        if self._pending is not None:
            self.optimizer.load_state_dict(self._pending[0])
            self.scheduler.load_state_dict(self._pending[1])

    def _close_loader(self) -> None:
        # Persistent workers otherwise live until the interpreter exits; DataLoader has no public close.
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader = None

    def fit(self) -> dict:
        self._setup()
        previous = self._install_signal_handlers()
        try:
            last = self._run()
            self.save()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close_loader()
            self.metrics.close()
        return {"step": self.step, "total_steps": self.total_steps, "checkpoint": str(self.last_checkpoint),
                "bad_steps": self.bad_steps_total, "skipped": dict(self.skipped), **last}

    def _run(self) -> dict:
        """Steps until the end, `max_steps_this_run` or a stop request; returns the last logged metrics."""
        cfg = self.cfg
        log.info("training %s for %d steps (%s) on %s x%d, precision %s, %d trainable parameters", cfg.student.model,
                 self.total_steps, self.cfg.train, self.device, self.dist.world_size, self.precision,
                 sum(p.numel() for p in self.student.parameters() if p.requires_grad))
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.dist.is_main and cfg.log.progress),
                   dynamic_ncols=True, desc="train")
        batches = self._batches()
        start_step, last = self.step, {}
        t_log, samples_log = time.perf_counter(), 0
        while self.step < self.total_steps and not self.stop_requested:
            position = self._data_position()
            try:
                out, n = self._train_step(batches)
            except _LoaderStopped as exc:
                log.warning("the data loader failed after the stop request (%s); saving step %d", exc, self.step)
                self._set_data_position(position)
                self.optimizer.zero_grad(set_to_none=True)
                break
            samples_log += n
            bar.update(1)
            if self.step % cfg.log.every_steps == 0 or self.step == self.total_steps:
                dt = time.perf_counter() - t_log
                last = self._log(out, samples_log / max(dt, 1e-9))
                bar.set_postfix({k.replace("_loss", ""): f"{v:.3f}" for k, v in last.items() if k.endswith("_loss")}
                                | {"samples/s": f"{last['samples_per_s']:.1f}"})
                t_log, samples_log = time.perf_counter(), 0
            if self.eval_hook.due(self.step, self.total_steps):
                self._evaluate()
            if self.step % cfg.train.ckpt_every == 0 and self.step < self.total_steps:
                self.save()
            if cfg.train.max_steps_this_run and self.step - start_step >= cfg.train.max_steps_this_run:
                self.stop_requested = True
        bar.close()
        batches.close()
        return last

    def _next_batch(self, batches) -> dict:
        """The next micro-batch on the device, its bookkeeping (skips, stream position) taken out."""
        try:
            batch = next(batches)
        except RuntimeError as exc:  # a worker killed by the signal that asked us to stop
            if not self.stop_requested:
                raise
            raise _LoaderStopped(str(exc).strip().splitlines()[-1]) from exc
        self.skipped.update(batch.pop("skipped", {}))
        worker, position = batch.pop("stream_position")
        self.data_positions[worker] = position
        return _to_device(batch, self.device)

    def _cached_features(self, micro: list[dict], autocast) -> list[dict | None]:
        """Gradient accumulation's first pass: every micro-batch's contrastive embeddings, without gradients,
        so that each micro-batch is then scored against the whole step's batch (see `splice_rows`)."""
        if len(micro) == 1:
            return [None]
        with torch.no_grad(), autocast():
            feats = [self.objective.contrastive_features(b) for b in micro]
        image, text = torch.cat([f[0] for f in feats]), torch.cat([f[1] for f in feats])  # (N, E)
        starts = [sum(f[0].shape[0] for f in feats[:i]) for i in range(len(feats))]
        return [{"image": image, "text": text, "start": start, "micro_batches": len(micro)} for start in starts]

    def _train_step(self, batches) -> tuple[dict, int]:
        """One optimizer step over `grad_accum` micro-batches. The contrastive term scores the whole step's
        batch (feature-cached accumulation: its loss and gradients are the big batch's); each distillation
        term is its micro-batch's mean over its own first round(p * b) rows, averaged over the micro-batches
        (as many distilled rows as the big batch, taken from every micro-batch instead of its first rows)."""
        cfg, accum = self.cfg, self.cfg.train.grad_accum
        self.model.train()
        dtype = _DTYPES.get(self.precision)

        def autocast():
            return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

        micro = [self._next_batch(batches) for _ in range(accum)]  # all first: the cached pass reads every one
        total, samples, out = 0.0, 0, {}
        for i, (batch, cached) in enumerate(zip(micro, self._cached_features(micro, autocast))):
            sync = i == accum - 1 or not isinstance(self.model, DDP)
            with (contextlib.nullcontext() if sync else self.model.no_sync()):
                with autocast():
                    out = self.model(batch) if cached is None else self.model(batch, cached)
                self.scaler.scale(out["loss"] / accum).backward()
            total = total + out["loss"].detach() / accum
            samples += batch["image"].shape[0] * self.dist.world_size
        finite = all_reduce_min(torch.isfinite(total).float().reshape(1))
        self.step += 1
        self.samples_seen += samples
        if finite.item() < 1:  # skip the update on every rank together
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                # update() alone asserts "No inf checks were recorded" (no scaler.step ran): back off by hand,
                # as the scaler does itself on an overflow.
                self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
            self._count_bad_step()
            self.scheduler.step()
            return {**out, "grad_norm": torch.tensor(float("nan"))}, samples
        self.bad_in_a_row = 0
        self.scaler.unscale_(self.optimizer)
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.student.parameters() if p.requires_grad], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():  # CLIP: the temperature never exceeds 100
            self.student.logit_scale.clamp_(0, math.log(100))
        return {**out, "grad_norm": grad_norm}, samples

    def _data_position(self) -> tuple:
        return self.epoch, self.batch_in_epoch, list(self.data_positions), Counter(self.skipped)

    def _set_data_position(self, position: tuple) -> None:
        self.epoch, self.batch_in_epoch, self.data_positions, self.skipped = position

    def _count_bad_step(self) -> None:
        self.bad_steps_total += 1
        self.bad_in_a_row += 1
        log.warning("step %d: non-finite loss, update skipped (%d in a row)", self.step, self.bad_in_a_row)
        if self.bad_in_a_row >= self.cfg.train.max_bad_steps:
            raise TrainingDiverged(
                f"{self.bad_in_a_row} non-finite losses in a row at step {self.step}; stopped without saving. "
                f"The last good checkpoint is {self.last_checkpoint or 'none (no checkpoint was written yet)'}. "
                "Lower optim.lr, raise optim.warmup_steps, use train.precision=fp32, or check the data.")

    def _log(self, out: dict, samples_per_s: float) -> dict:
        keys = sorted(k for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1)
        vals = torch.stack([out[k].detach().float().reshape(()).to(self.device) for k in keys])
        if self.dist.world_size > 1:  # means over ranks (the single-process equivalents)
            torch.distributed.all_reduce(vals)
            vals /= self.dist.world_size
        metrics = dict(zip(keys, vals.tolist()))
        metrics.update({"lr": self.scheduler.get_last_lr()[0], "samples_per_s": samples_per_s, "epoch": self.epoch,
                        "samples_seen": self.samples_seen, "bad_steps": self.bad_steps_total,
                        **{f"skipped/{k}": v for k, v in self._skipped_all_ranks().items()}})
        if self.device.type == "cuda":
            metrics["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            metrics["peak_rss_gb"] = peak_rss_mb() / 1024
        self.metrics.log(self.step, metrics)
        return metrics

    def _skipped_all_ranks(self) -> dict[str, int]:
        """Skipped-sample counts summed over ranks (each rank counts only the data it read)."""
        keys = list(SKIP_REASONS)  # the same vector on every rank, whatever each has counted so far
        if self.dist.world_size == 1:
            return {k: self.skipped[k] for k in keys}
        counts = torch.tensor([self.skipped[k] for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(counts)
        return dict(zip(keys, (int(c) for c in counts.tolist())))

    def _evaluate(self) -> None:
        if self.dist.is_main:
            results = self.eval_hook.run(self.student, self.tokenizer, self.device)
            if results:
                log.info("eval at step %d: %s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
                self.metrics.log(self.step, results)
        barrier()


def train(cfg: RunConfig) -> dict:
    """Run training from a config; returns a summary (final step, last metrics, checkpoint path)."""
    return Trainer(cfg).fit()
