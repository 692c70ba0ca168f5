"""WebDataset shards as img2dataset writes them: `<key>.<image ext>` + `<key>.txt` (+ `<key>.json`).

Owns opening shards (local files, `pipe:` commands, urls; evaluation opens them here too; the specs are
`spec.py`'s), the checks that fail at once in the main process (no shard found), epoch sizes read beside
the shards, and `WebDatasetSource`: the endless, counted, per-slot stream of raw samples that `BatchStream` consumes.

Why not `wds.split_by_node` / `wds.split_by_worker` / `wds.ResampledShards`: they take rank and worker
from the process (env vars, torch.distributed, worker info) and their own epoch counters, while exact
resume needs the split by a *logical* worker id and seeds from (seed, epoch). The split is the same
(`shards[slot::slots]` over a per-epoch shuffled list); resampling is a seeded `rng.choice`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tarfile
from collections import Counter
from collections.abc import Iterator
from itertools import count
from pathlib import Path

from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext, group_by_keys

from .spec import IMAGE_EXTS, expand_shards, local_path
from .stream import PASS_END, derive_seed

logger = logging.getLogger(__name__)

# `IMAGE_EXTS` and `expand_shards` live in `spec.py` (shared with evaluation) and are re-exported here.
__all__ = ["IMAGE_EXTS", "expand_shards", "check_shards", "dataset_size", "open_shard", "read_shard",
           "to_sample", "WebDatasetSource"]

# A worker gives up (raises) when every shard it tried since its last good one failed and that covers
# all shards, or after this many failed shards in a row (storage gone, credentials expired).
MAX_BAD_SHARD_STREAK = 1000
_READ_CHUNK = 1 << 20


def check_shards(urls: list[str], spec: str) -> None:
    """Fail at once if no local shard exists; warn about the missing ones (they are skipped and counted)."""
    if not urls:
        raise ValueError(f"train_data {spec!r} expands to no shard")
    local = [(url, local_path(url)) for url in urls]
    local = [(url, path) for url, path in local if path is not None]
    if not local:
        return  # pipe: or remote urls, only the workers can tell
    missing = [url for url, path in local if not os.path.isfile(path)]
    if len(missing) == len(local):
        raise FileNotFoundError(f"train_data {spec!r}: none of its {len(local)} shards exists "
                                f"(first: {missing[0]!r}); check the path and the brace range")
    if missing:
        logger.warning("train_data: %d of %d shards do not exist and will be skipped (counted as bad_shard): %s%s",
                       len(missing), len(urls), ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")


def dataset_size(urls: list[str]) -> int | None:
    """Samples in the shards, from files beside them; None when they do not say.

    Per folder: `sizes.json` (shard file name -> count, as open_clip reads), else img2dataset's
    `<shard>_stats.json` (`successes`), else `__len__` (the folder total). Missing shards count 0.
    """
    folders: dict[str, list[str]] = {}
    for url in urls:
        path = local_path(url)
        if path is None:
            return None
        folders.setdefault(os.path.dirname(path) or ".", []).append(path)
    total = 0
    for folder, paths in folders.items():
        present = [p for p in paths if os.path.isfile(p)]
        sizes_file = os.path.join(folder, "sizes.json")
        if os.path.isfile(sizes_file):
            sizes = json.loads(Path(sizes_file).read_text())
            if all(os.path.basename(p) in sizes for p in present):
                total += sum(int(sizes[os.path.basename(p)]) for p in present)
                continue
        stats = [os.path.join(folder, Path(p).name.split(".")[0] + "_stats.json") for p in present]
        if all(os.path.isfile(s) for s in stats):
            total += sum(int(json.loads(Path(s).read_text())["successes"]) for s in stats)
            continue
        len_file = os.path.join(folder, "__len__")
        if os.path.isfile(len_file):
            total += int(Path(len_file).read_text().strip())
            continue
        return None
    return total


def open_shard(url: str):
    """A binary stream of one shard url: a local file, the stdout of a `pipe:` command, or a download."""
    return gopen(url, "rb", bufsize=_READ_CHUNK)


def _tar_members(stream, url: str, errors: list[Exception]) -> Iterator[dict]:
    """The whole members of a tar stream; a read failure ends it quietly and is appended to `errors`.

    Ending quietly (not raising) lets `group_by_keys` yield the last sample before the failure: it only
    yields a sample when the next key starts or its input ends, never when its input raises.
    """
    try:
        # Streaming read ("r|*": plain or compressed, from a file or a pipe), as webdataset does.
        tar = tarfile.open(fileobj=stream, mode="r|*")
        for info in tar:
            if not info.isreg() or (info.name.startswith("__") and info.name.endswith("__")):
                continue
            try:
                data = tar.extractfile(info).read()
            except Exception:
                # A member cut short: its sample is incomplete, so it is marked bad (group_by_keys drops a
                # sample with `__bad__`) and the shard's broken tail is counted as `bad_shard`.
                yield {"fname": f"{base_plus_ext(info.name)[0]}.__bad__", "data": True, "__url__": url}
                raise
            yield {"fname": info.name, "data": data, "__url__": url}
            tar.members = []  # streaming: keep no index
        # tarfile ends quietly at a corrupt header after the first, or at a file cut at a member boundary;
        # a whole archive has its end marker (zero blocks) left and nothing else.
        end_marker = False
        while chunk := tar.fileobj.read(_READ_CHUNK):
            if chunk.strip(b"\0"):
                raise tarfile.ReadError(f"corrupt tar header at byte {tar.offset}")
            end_marker = True
        if not end_marker:
            raise tarfile.ReadError(f"truncated at byte {tar.offset} (no end-of-archive marker)")
    except Exception as exc:  # noqa: BLE001 - counted by read_shard
        errors.append(exc)


def read_shard(url: str, counts: Counter) -> Iterator[dict]:
    """The raw samples of one shard (dicts of extension -> bytes, plus `__key__`); never raises.

    A shard that cannot be opened or read to its end is counted once as `bad_shard` and logged with the
    reason; the samples read before the failure are kept.
    """
    stream = None
    n = 0
    errors: list[Exception] = []
    try:
        stream = open_shard(url)
        # group_by_keys' handler skips a duplicate member; a broken tar stream ends the members quietly,
        # so the samples before the break (the last one included) are yielded, then it is raised here.
        for sample in group_by_keys(_tar_members(stream, url, errors), handler=_skip_member):
            n += 1
            yield sample
        if errors:
            raise errors[0]
        stream.close()  # a pipe: command reports its exit status here
        stream = None
    except Exception as exc:  # noqa: BLE001 - a bad shard is skipped, never a crash
        counts["bad_shard"] += 1
        logger.warning("bad shard %s (kept the %d samples before the failure): %s: %s", url, n, type(exc).__name__, exc)
    finally:
        if stream is not None:
            try:
                stream.close()
            except Exception as exc:  # noqa: BLE001 - closing a stream we stopped reading early
                logger.debug("closing %s: %s", url, exc)


def _skip_member(exc: Exception) -> bool:
    logger.debug("skipping a tar member: %s", exc)
    return True


def to_sample(raw: dict, counts: Counter) -> dict | None:
    """Raw shard sample -> `{__key__, caption, image}`; None (counted) if unusable before decoding."""
    image = next((raw[ext] for ext in IMAGE_EXTS if ext in raw), None)
    if image is None:
        counts["missing_image"] += 1
        return None
    text = raw.get("txt")
    if text is None:
        counts["empty_caption"] += 1
        return None
    try:
        caption = text.decode("utf-8").strip()
    except UnicodeDecodeError:
        counts["bad_text"] += 1
        return None
    if not caption:
        counts["empty_caption"] += 1
        return None
    return {"__key__": raw["__key__"], "caption": caption, "image": image}


class WebDatasetSource:
    """Endless raw samples of one slot (rank x logical worker) for an epoch.

    Not resampled: pass `p` of epoch `e` shuffles the shard list with seed (seed, e, p) and the slot reads
    `shards[slot::num_slots]`; pass 0 covers every shard exactly once across all slots, later passes
    only serve slots whose share ran out before their batch quota. Resampled: shards drawn with
    replacement from a generator seeded by (seed, epoch, slot).
    """

    def __init__(self, urls: list[str], resampled: bool = False, seed: int = 0) -> None:
        self.urls = list(urls)
        self.resampled = resampled
        self.seed = seed
        self.num_distinct = len(set(self.urls))

    def shard_order(self, epoch: int, slot: int, num_slots: int) -> Iterator[str | None]:
        """The endless sequence of shard urls this slot reads in `epoch`, with `PASS_END` between passes."""
        if self.resampled:
            rng = random.Random(derive_seed(self.seed, epoch, slot, "resampled"))
            while True:
                yield rng.choice(self.urls)
        for p in count():
            order = list(self.urls)
            random.Random(derive_seed(self.seed, epoch, p, "shards")).shuffle(order)
            yield from order[slot::num_slots]
            yield PASS_END

    def samples(self, epoch: int, slot: int, num_slots: int, counts: Counter) -> Iterator[dict | None]:
        failed: set[str] = set()
        streak = 0
        for url in self.shard_order(epoch, slot, num_slots):
            if url is PASS_END:
                yield PASS_END
                continue
            good = 0
            for raw in read_shard(url, counts):
                sample = to_sample(raw, counts)
                if sample is not None:
                    good += 1
                    yield sample
            if good:
                failed.clear()
                streak = 0
                continue
            failed.add(url)
            streak += 1
            if len(failed) == self.num_distinct or streak >= MAX_BAD_SHARD_STREAK:
                raise RuntimeError(f"no usable sample in {streak} shards in a row (last: {url}); "
                                   f"counts so far: {dict(counts)}")
