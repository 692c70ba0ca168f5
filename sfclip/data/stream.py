"""The training sample stream shared by the webdataset and csv sources: one `IterableDataset`.

Owns the per-worker plan (which slice of the data a DataLoader worker reads in an epoch, and how many
batches it yields), the sample shuffle buffer, resume skipping, decode + augment, skip counting and the
collate that builds the batch dict of DEVELOPERS.md.

Determinism and resume. Every worker yields exactly `num_worker_batches` batches per epoch, read from an
endless stream (the data is re-read in a new order if its share runs out), so that the DataLoader's
round-robin is exact: global batch `i` of an epoch is local batch `i // W` of logical worker `i % W`.
Everything random is derived from (seed, epoch, rank, logical worker) and a sample's position in its
worker's shuffled stream, never from process state. Resuming at batch `k` starts physical worker `p` as
logical worker `(p + k) % W` (the DataLoader always asks worker 0 first) and drops the samples of that
logical worker's first `ceil((k - l) / W)` batches before decoding them.

Each batch carries `stream_position`: (its logical worker, the position in that worker's stream after its
last sample). A checkpoint records the latest of each worker; resuming with those positions drops exactly
that many stream entries, undecoded, so a resume is exact even when the skipped range held undecodable
images or samples without cached targets. Without them (an older checkpoint), the skipped batches are
counted in good samples, which only `exact_resume` makes exact (by decoding the skipped images).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from .transforms import ImageTransform, decode_image

logger = logging.getLogger(__name__)

__all__ = ["SKIP_REASONS", "MISSING_TARGET", "PASS_END", "SharedEpoch", "SampleSource", "TargetLookup",
           "BatchStream", "collate", "worker_role", "derive_seed"]

# The keys of `batch["skipped"]`, always all present (plus `missing_target` when a target cache is attached).
SKIP_REASONS = ("bad_image", "empty_caption", "bad_text", "missing_image", "bad_shard")
# The skip reason for a sample that the target cache has no row for (present in `batch["skipped"]` only when a
# cache is attached, so batches without one keep the documented keys).
MISSING_TARGET = "missing_target"
# Sources yield this between passes over their data.
PASS_END = None
# A worker that meets this many bad samples in a row is reading data that cannot work (wrong format,
# wrong keys); failing loudly beats a silent hang of the whole job.
MAX_BAD_STREAK = 10_000


def derive_seed(*parts: Any) -> int:
    """A 64-bit seed from any tuple of ints and strings, stable across processes and Python runs."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


class SharedEpoch:
    """The current epoch in shared memory, so that persistent workers see `set_value` from the trainer."""

    def __init__(self, epoch: int = 0) -> None:
        self.shared = mp.Value("i", epoch)

    def set_value(self, epoch: int) -> None:
        self.shared.value = epoch

    def get_value(self) -> int:
        return self.shared.value


class SampleSource(Protocol):
    """Where raw samples come from (`WebDatasetSource`, `CsvSource`).

    `samples` yields, without end, the raw samples of one slot (a rank x logical worker) for an epoch:
    dicts with `__key__`, `caption` (str, non-empty) and `image` (bytes) or `path` (a file), and
    `PASS_END` after each pass over its share. Samples it drops (no image, bad caption, bad shard) are
    counted into `counts` by reason.
    """

    def samples(self, epoch: int, slot: int, num_slots: int, counts: Counter) -> Iterator[dict]: ...


class TargetLookup(Protocol):
    """Per-sample teacher targets by key (`sfclip.data.targets.TargetCache`); picklable into workers."""

    path: Path  # named in errors

    def __contains__(self, key: str) -> bool: ...

    def lookup(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """`{teacher: {field: (B, n, D) tensor}}` for `keys`, all present."""
        ...


def worker_role(physical: int, num_workers: int, skip_batches: int) -> tuple[int, int]:
    """(logical worker id, batches that logical worker skips) for a loader resumed at `skip_batches`."""
    logical = (physical + skip_batches) % num_workers
    # Batches 0..k-1 that came from logical worker l: those i < k with i % W == l.
    skipped = max(0, (skip_batches - logical + num_workers - 1) // num_workers)
    return logical, skipped


def shuffled(samples: Iterable[dict | None], size: int, rng: random.Random) -> Iterator[dict | None]:
    """A shuffle buffer of `size` samples: each incoming sample replaces a random buffered one.

    At a `PASS_END` the buffer is emptied (shuffled) first, so that a pass over the data is emitted
    whole before the next one starts: one epoch of a non-resampled source then sees every sample once.
    """
    buffer: list[dict] = []
    for sample in samples:
        if sample is PASS_END:
            rng.shuffle(buffer)
            yield from buffer
            buffer.clear()
            continue
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = rng.randrange(size)
        buffer[index], sample = sample, buffer[index]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


def load_image(sample: dict) -> Image.Image:
    """Decode a raw sample's image (bytes from a shard, or a file from a csv row) to RGB."""
    data = sample["image"] if "image" in sample else Path(sample["path"]).read_bytes()
    return decode_image(data)


def collate(keys: list[str], captions: list[str], images: dict, tokenizer: Callable,
            counts: Counter | None = None) -> dict:
    """The batch dict: `images` is `{"image": (B,3,S,S), "teacher_image": {s: (B,3,s,s)}}` (from
    `ImageTransform.batch`); the captions are tokenized in one call."""
    tokens = tokenizer(captions)
    batch: dict[str, Any] = {
        "image": images["image"],  # (B, 3, S, S)
        "input_ids": tokens["input_ids"].long(),  # (B, T)
        "attention_mask": tokens["attention_mask"].long(),  # (B, T)
    }
    if images.get("teacher_image"):
        batch["teacher_image"] = images["teacher_image"]  # {s: (B, 3, s, s)}
    batch["__key__"] = list(keys)
    counts = counts or Counter()
    batch["skipped"] = {reason: int(counts.get(reason, 0)) for reason in SKIP_REASONS}
    return batch


class BatchStream(IterableDataset):
    """Batches (already collated) for one rank; give it to a DataLoader with `batch_size=None`.

    `len()` is the number of batches per epoch for this rank. The epoch is read from `shared_epoch` at
    the start of each iteration; `skip_batches` applies to the iteration of `start_epoch` only.
    """

    def __init__(self, source: SampleSource, transform: ImageTransform, tokenizer: Callable, *, batch_size: int,
                 num_worker_batches: int, num_workers: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle_buffer: int = 0, shared_epoch: SharedEpoch | None = None, start_epoch: int = 0,
                 skip_batches: int = 0, exact_resume: bool = False, targets: TargetLookup | None = None,
                 start_positions: list[int] | None = None) -> None:
        super().__init__()
        self.source = source
        self.transform = transform
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.num_worker_batches = num_worker_batches
        self.num_workers = max(1, num_workers)
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.shared_epoch = shared_epoch if shared_epoch is not None else SharedEpoch(start_epoch)
        self.start_epoch = start_epoch
        self.skip_batches = skip_batches
        self.exact_resume = exact_resume
        # Per logical worker: stream entries to drop in `start_epoch` (from a checkpoint); None = count batches.
        if start_positions is not None and len(start_positions) != self.num_workers:
            raise ValueError(f"start_positions has {len(start_positions)} entries for {self.num_workers} workers")
        self.start_positions = start_positions
        # Cached teacher targets: samples the cache lacks are skipped (before decoding) and counted.
        self.targets = targets

    def __len__(self) -> int:
        return self.num_worker_batches * self.num_workers

    def __iter__(self) -> Iterator[dict]:
        epoch = self.shared_epoch.get_value()
        info = get_worker_info()
        physical, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if num_workers != self.num_workers:
            raise RuntimeError(f"BatchStream was planned for {self.num_workers} workers but runs in {num_workers}; "
                               "build it with the DataLoader's num_workers")
        skip = self.skip_batches if epoch == self.start_epoch else 0
        logical, local_skip = worker_role(physical, num_workers, skip)
        if local_skip >= self.num_worker_batches:
            return  # resumed at (or past) the end of this epoch
        slot, num_slots = self.rank * num_workers + logical, self.world_size * num_workers
        counts: Counter = Counter()
        raw: Iterator[dict | None] = iter(self.source.samples(epoch, slot, num_slots, counts))
        if self.shuffle_buffer > 1:
            raw = shuffled(raw, self.shuffle_buffer, random.Random(derive_seed(self.seed, epoch, slot, "buffer")))
        # A sample's position in this stream seeds its augmentation, so a resumed run that skips samples
        # without decoding them still draws the same crops afterwards.
        stream = enumerate(sample for sample in raw if sample is not PASS_END)

        positions = self.start_positions if epoch == self.start_epoch and skip else None
        for _ in range(positions[logical] if positions is not None else 0):
            _next(stream, slot)
        to_skip = local_skip * self.batch_size if positions is None else 0
        while to_skip > 0:
            _, sample = _next(stream, slot)
            if self.targets is not None and sample["__key__"] not in self.targets:
                continue  # never part of a batch, so never part of the count being skipped
            if self.exact_resume and self._decode(sample) is None:
                continue
            to_skip -= 1
        # Those were counted and reported by the run being resumed.
        counts.clear()
        for _ in range(self.num_worker_batches - local_skip):
            batch = self._batch(stream, counts, epoch, slot, logical)
            counts.clear()
            yield batch

    def _batch(self, stream: Iterator[tuple[int, dict]], counts: Counter, epoch: int, slot: int,
               logical: int) -> dict:
        """The next `batch_size` decodable samples, augmented and collated."""
        keys, captions, views = [], [], []
        bad_streak = 0
        while len(keys) < self.batch_size:
            position, sample = _next(stream, slot)
            if self.targets is not None and sample["__key__"] not in self.targets:
                counts[MISSING_TARGET] += 1
                bad_streak += 1
                if bad_streak >= MAX_BAD_STREAK:
                    raise RuntimeError(f"{bad_streak} samples in a row have no row in the target cache "
                                       f"{self.targets.path} (last key {sample['__key__']!r}); was it built "
                                       "from this data?")
                continue
            img = self._decode(sample)
            if img is None:
                counts["bad_image"] += 1
                bad_streak += 1
                if bad_streak >= MAX_BAD_STREAK:
                    raise RuntimeError(f"{bad_streak} undecodable images in a row (last key {sample['__key__']!r}); "
                                       "is train_data the right data?")
                continue
            bad_streak = 0
            views.append(self.transform.views(img, random.Random(derive_seed(self.seed, epoch, slot, position))))
            keys.append(sample["__key__"])
            captions.append(sample["caption"])
        batch = collate(keys, captions, self.transform.batch(views), self.tokenizer, counts)
        if self.targets is not None:
            batch["targets"] = self.targets.lookup(keys)  # {teacher: {field: (B, n, D) float16}}
            batch["skipped"][MISSING_TARGET] = int(counts.get(MISSING_TARGET, 0))
        batch["stream_position"] = (logical, position + 1)
        return batch

    @staticmethod
    def _decode(sample: dict) -> Image.Image | None:
        try:
            return load_image(sample)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad sample, never a crash
            logger.debug("skipping undecodable image %s: %s: %s", sample.get("__key__"), type(exc).__name__, exc)
            return None


def _next(stream: Iterator, slot: int) -> Any:
    try:
        return next(stream)
    except StopIteration:
        raise RuntimeError(f"the sample stream of slot {slot} ended; sources must be endless") from None
