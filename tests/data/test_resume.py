"""Resume: a loader rebuilt at (epoch, k) yields exactly batches k.. of an uninterrupted epoch."""

from __future__ import annotations

import os

import pytest
import torch
from data_helpers import good_samples, image_bytes, write_shard

from sfclip.data import DataConfig, build_train_loader
from sfclip.data.stream import worker_role


def _cfg(spec: str, workers: int, **kw) -> DataConfig:
    base = dict(train_data=spec, batch_size=2, workers=workers, image_size=8, teacher_sizes=[12],
                shuffle_buffer=5, num_samples=24, seed=3)
    return DataConfig(**{**base, **kw})


def _assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert [b["__key__"] for b in got] == [b["__key__"] for b in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(g["image"], w["image"], rtol=0, atol=0)  # same crops, not just same keys
        torch.testing.assert_close(g["teacher_image"][12], w["teacher_image"][12], rtol=0, atol=0)
        assert torch.equal(g["input_ids"], w["input_ids"])


@pytest.mark.parametrize("num_workers", [1, 2, 3, 4])
def test_worker_role_replays_the_dataloader_round_robin(num_workers):
    # The uninterrupted run: batch i is local batch i // W of worker i % W.
    per_worker = 5
    full = [(i % num_workers, i // num_workers) for i in range(per_worker * num_workers)]
    for k in range(len(full) + 1):
        roles = [worker_role(p, num_workers, k) for p in range(num_workers)]
        # The resumed run asks physical workers 0, 1, ... in turn, each from its first unskipped batch.
        nexts = {p: skipped for p, (_, skipped) in enumerate(roles)}
        resumed = []
        for j in range(len(full) - k):
            p = j % num_workers
            resumed.append((roles[p][0], nexts[p]))
            nexts[p] += 1
        assert resumed == full[k:]


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_loader_yields_the_remaining_batches_exactly(shards, tokenizer, workers):
    spec, _ = shards
    loader, info = build_train_loader(_cfg(spec, workers), tokenizer)
    full = list(loader)
    info.set_epoch(1)
    next_epoch = list(loader)
    assert len(full) == info.num_batches == 12
    for k in (3, 8):
        resumed_loader, resumed_info = build_train_loader(_cfg(spec, workers), tokenizer, epoch=0, skip_batches=k)
        resumed = list(resumed_loader)
        _assert_same_batches(resumed, full[k:])
        if k == 3:  # and the epoch after the resumed one is the uninterrupted run's next epoch
            resumed_info.set_epoch(1)
            _assert_same_batches(list(resumed_loader), next_epoch)


def test_exact_resume_accounts_for_undecodable_images_in_the_skipped_range(tmp_path, tokenizer):
    for s in range(2):
        samples = good_samples(s, 6)
        samples[1] = {"__key__": f"{s:03d}bad", "png": os.urandom(200), "txt": "garbage image"}
        samples.append({"__key__": f"{s:03d}bad2", "jpg": image_bytes("JPEG")[:40], "txt": "truncated"})
        write_shard(tmp_path / f"{s:05d}.tar", samples)
    spec = str(tmp_path / "{00000..00001}.tar")
    cfg = _cfg(spec, 0, num_samples=10, shuffle_buffer=0, teacher_sizes=[], exact_resume=True)
    full = list(build_train_loader(cfg, tokenizer)[0])
    assert sum(b["skipped"]["bad_image"] for b in full) == 3  # the last shard's final sample is never reached
    k = 4  # the skipped 8 samples hold at least one bad image whatever the shard order
    exact = list(build_train_loader(cfg, tokenizer, skip_batches=k)[0])
    assert [b["__key__"] for b in exact] == [b["__key__"] for b in full[k:]]
    cheap_cfg = _cfg(spec, 0, num_samples=10, shuffle_buffer=0, teacher_sizes=[], exact_resume=False)
    cheap = list(build_train_loader(cheap_cfg, tokenizer, skip_batches=k)[0])
    # Skipping without decoding cannot know the bad images it passed: the stream shifts.
    assert [b["__key__"] for b in cheap] != [b["__key__"] for b in full[k:]]


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_positions_make_resume_exact_without_decoding(tmp_path, tokenizer, workers):
    for s in range(4):
        samples = good_samples(s, 6)
        samples[1] = {"__key__": f"{s:03d}bad", "png": os.urandom(200), "txt": "garbage image"}
        samples[4] = {"__key__": f"{s:03d}bad2", "jpg": image_bytes("JPEG")[:40], "txt": "truncated"}
        write_shard(tmp_path / f"{s:05d}.tar", samples)
    cfg = _cfg(str(tmp_path / "{00000..00003}.tar"), workers, num_samples=16, exact_resume=False)
    full = list(build_train_loader(cfg, tokenizer)[0])
    for k in (3, 5):
        positions = [0] * max(1, workers)  # what the trainer records: each worker's latest position
        for batch in full[:k]:
            worker, position = batch["stream_position"]
            positions[worker] = position
        resumed = list(build_train_loader(cfg, tokenizer, skip_batches=k, start_positions=positions)[0])
        _assert_same_batches(resumed, full[k:])
        assert [b["skipped"] for b in resumed] == [b["skipped"] for b in full[k:]]
    # without positions (a checkpoint from an older sfclip) the undecodable images shift the stream
    cheap = list(build_train_loader(cfg, tokenizer, skip_batches=5)[0])
    assert [b["__key__"] for b in cheap] != [b["__key__"] for b in full[5:]]
