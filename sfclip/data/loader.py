"""`build_train_loader`: a `DataConfig` + tokenizer -> the training DataLoader of one rank and its sizes.

Owns the checks that must fail at once in the main process (no data, a split that cannot work, an
unknown epoch size) and the epoch plan: batches per rank, rounded up so that every DataLoader worker
yields the same number of batches (which is what makes DDP ranks agree and resume exact).
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing as mp
import os
import signal
from dataclasses import dataclass, field
from functools import partial

import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError
from .config import DataConfig
from .csv import CsvSource, read_table
from .spec import expand_shards, resolve_dataset_type
from .stream import BatchStream, SharedEpoch
from .targets import TargetCache
from .transforms import ImageTransform
from .wds import WebDatasetSource, check_shards, dataset_size

logger = logging.getLogger(__name__)

__all__ = ["DataInfo", "build_train_loader"]


@dataclass
class DataInfo:
    """Sizes of one rank's training loader; call `set_epoch(e)` before iterating epoch `e`."""

    num_batches: int  # batches per full epoch for this rank (= len(loader); a resumed epoch yields fewer)
    num_samples: int  # samples per epoch over all ranks: num_batches * batch_size * world_size
    batch_size: int  # per rank
    dataset_size: int  # samples in the data, as configured or found beside it
    shared_epoch: SharedEpoch = field(repr=False)
    workers: int = 1  # logical data workers of this rank (DataLoader workers, at least 1)

    def set_epoch(self, epoch: int) -> None:
        self.shared_epoch.set_value(epoch)


_main_exiting = None


def _exiting_flag():
    """Set when this (main) process starts exiting; created once, shared with the workers."""
    global _main_exiting
    if _main_exiting is None:
        _main_exiting = mp.Event()
        # Runs before multiprocessing's own exit hook (atexit is last-in first-out), which terminates
        # the workers still alive with SIGTERM.
        atexit.register(_main_exiting.set)
    return _main_exiting


def _worker_signals(exiting, worker_id: int) -> None:
    # SLURM, Kubernetes and spot preemption signal the whole process group. The trainer's main process
    # answers SIGTERM / SIGINT by finishing the step, checkpointing and shutting its workers down; a
    # worker killed by the same signal would crash the main process before it could checkpoint. So a
    # worker ignores them, unless they come from its main process exiting.
    def on_signal(signum, frame):
        if exiting.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def build_train_loader(cfg: DataConfig, tokenizer, rank: int = 0, world_size: int = 1, epoch: int = 0,
                       skip_batches: int = 0, start_positions: list[int] | None = None) -> tuple[DataLoader, DataInfo]:
    """The training loader of `rank`, positioned at `epoch`, resumed after `skip_batches` batches of it.

    Iterate it once per epoch after `info.set_epoch(e)`; the batches of a resumed epoch are exactly those
    an uninterrupted run yields from batch `skip_batches` on (see `sfclip.data.stream`). `start_positions`
    (each logical worker's `stream_position` from the run being resumed) makes that exact whatever the
    skipped range held; it is ignored, with a warning, if the number of workers changed.

    With fewer shards than ranks x workers, the workers are reduced (with a warning) to what the shards
    can feed; the data workers' processes ignore SIGTERM and SIGINT (the main process handles them).
    """
    if not cfg.train_data:
        raise ValueError("DataConfig.train_data is empty: give a shard spec (/data/{00000..00099}.tar) or a .csv/.tsv")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if skip_batches < 0 or epoch < 0:
        raise ValueError(f"epoch and skip_batches must be >= 0, got {epoch}, {skip_batches}")
    num_workers = cfg.workers

    if resolve_dataset_type(cfg) == "csv":
        paths, captions = read_table(cfg.train_data, cfg.csv_img_key, cfg.csv_caption_key, cfg.csv_separator)
        if len(paths) < world_size * max(1, num_workers):
            raise ConfigError(f"data.train_data {cfg.train_data}: {len(paths)} rows cannot feed {world_size} "
                                f"ranks x {max(1, num_workers)} workers; lower data.workers")
        source, size, shuffle_buffer = CsvSource(paths, captions, cfg.seed), cfg.num_samples or len(paths), 0
    else:
        urls = expand_shards(cfg.train_data)
        check_shards(urls, cfg.train_data)
        if not cfg.resampled and len(urls) < world_size:
            raise ConfigError(f"data.train_data has {len(urls)} shards but {world_size} ranks need at least one "
                                "each; set data.resampled=true or reshard")
        if not cfg.resampled and len(urls) < world_size * max(1, num_workers):
            num_workers = len(urls) // world_size
            logger.warning("data.workers=%d: %d shards over %d rank(s) can feed only %d worker(s) per rank; "
                           "using %d (reshard into more shards to use more)", cfg.workers, len(urls), world_size,
                           num_workers, num_workers)
        size = cfg.num_samples or dataset_size(urls) or 0
        if size <= 0:
            raise ValueError("DataConfig.num_samples is 0 and no sizes.json, <shard>_stats.json (img2dataset) or "
                             f"__len__ was found beside {cfg.train_data!r}; set DataConfig.num_samples to the "
                             "number of samples per epoch (tar streams have no length)")
        source, shuffle_buffer = WebDatasetSource(urls, cfg.resampled, cfg.seed), cfg.shuffle_buffer

    workers = max(1, num_workers)
    if start_positions is not None and len(start_positions) != workers:
        logger.warning("the checkpoint's data positions are for %d workers, this run has %d: resuming by batch "
                       "count instead (the data order differs from the original run's)", len(start_positions), workers)
        start_positions = None
    # Round up, as open_clip does: a short worker re-reads data rather than leaving its rank short.
    num_worker_batches = math.ceil(math.ceil(size / (cfg.batch_size * world_size)) / workers)
    num_batches = num_worker_batches * workers
    if skip_batches > num_batches:
        logger.warning("skip_batches=%d is past the end of epoch %d (%d batches); it yields nothing",
                       skip_batches, epoch, num_batches)

    # Fails here, in the main process, if the folder is no cache.
    targets = TargetCache(cfg.targets) if cfg.targets else None
    shared_epoch = SharedEpoch(epoch)
    transform = ImageTransform(cfg.image_size, cfg.mean, cfg.std, train=True, crop_scale=cfg.crop_scale,
                               ratio=cfg.ratio, teacher_sizes=cfg.teacher_sizes, hflip=cfg.hflip)
    dataset = BatchStream(source, transform, tokenizer, batch_size=cfg.batch_size,
                          num_worker_batches=num_worker_batches, num_workers=num_workers, rank=rank,
                          world_size=world_size, seed=cfg.seed, shuffle_buffer=shuffle_buffer,
                          shared_epoch=shared_epoch, start_epoch=epoch, skip_batches=skip_batches,
                          exact_resume=cfg.exact_resume, targets=targets, start_positions=start_positions)
    if num_workers > 0:
        # Each worker tokenizes one batch at a time; the tokenizer's own thread pool would only
        # oversubscribe the cores the other workers use.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                        persistent_workers=num_workers > 0,
                        worker_init_fn=partial(_worker_signals, _exiting_flag()) if num_workers > 0 else None)
    info = DataInfo(num_batches=num_batches, num_samples=num_batches * cfg.batch_size * world_size,
                    batch_size=cfg.batch_size, dataset_size=size, shared_epoch=shared_epoch, workers=workers)
    logger.info("train data %s: %d samples/epoch, %d batches of %d per rank, %d ranks x %d workers%s",
                cfg.train_data, info.num_samples, num_batches, cfg.batch_size, world_size, workers,
                f", resuming epoch {epoch} at batch {skip_batches}" if skip_batches else "")
    return loader, info
