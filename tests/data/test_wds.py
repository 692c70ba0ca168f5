"""WebDataset pipeline: batch contract, rank/worker split, bad data skipped and counted, fail-fast paths."""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter

import pytest
import torch
from data_helpers import good_samples, image_bytes, write_shard

from sfclip.data import SKIP_REASONS, DataConfig, build_train_loader
from sfclip.data.wds import WebDatasetSource, dataset_size, expand_shards


def cfg_for(spec: str, **kw) -> DataConfig:
    base = dict(train_data=spec, batch_size=3, workers=0, image_size=16, shuffle_buffer=4, num_samples=24, seed=1)
    return DataConfig(**{**base, **kw})


def epoch_batches(loader, info, epoch: int) -> list[dict]:
    info.set_epoch(epoch)
    return list(loader)


def test_batch_matches_the_contract(shards, tokenizer):
    spec, keys = shards
    loader, info = build_train_loader(cfg_for(spec, teacher_sizes=[24, 8]), tokenizer)
    assert len(loader) == info.num_batches == 8 and info.num_samples == 24
    batches = list(loader)
    assert len(batches) == 8
    b = batches[0]
    assert set(b) == {"image", "input_ids", "attention_mask", "teacher_image", "__key__", "skipped", "stream_position"}
    assert [tuple(x["stream_position"]) for x in batches[:3]] == [(0, 3), (0, 6), (0, 9)]  # 3 good samples each
    assert b["image"].shape == (3, 3, 16, 16) and b["image"].dtype == torch.float32
    assert b["input_ids"].shape == b["attention_mask"].shape == (3, tokenizer.context_length)
    assert b["input_ids"].dtype == b["attention_mask"].dtype == torch.long
    assert (b["input_ids"][:, 0] == tokenizer.bos_id).all()
    # "a photo of caption N" -> [CLS] + 5 words + [SEP], then padding.
    assert b["attention_mask"].sum(1).tolist() == [7, 7, 7]
    assert sorted(b["teacher_image"]) == [8, 24]
    assert b["teacher_image"][24].shape == (3, 3, 24, 24)
    assert b["teacher_image"][8].dtype == torch.uint8 and b["teacher_image"][8].max() > 0
    assert b["skipped"] == dict.fromkeys(SKIP_REASONS, 0)
    seen = [k for batch in batches for k in batch["__key__"]]
    assert sorted(seen) == sorted(keys)  # one epoch = every sample once
    assert "teacher_image" not in next(iter(build_train_loader(cfg_for(spec), tokenizer)[0]))


def test_two_ranks_two_workers_cover_each_sample_once_per_epoch(shards, tokenizer):
    spec, keys = shards
    per_epoch = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            loader, info = build_train_loader(cfg_for(spec, workers=2), tokenizer, rank=rank, world_size=2,
                                              epoch=epoch)
            batches = list(loader)
            assert len(batches) == info.num_batches == 4
            assert all(len(b["__key__"]) == 3 for b in batches)
            seen += [k for b in batches for k in b["__key__"]]
        assert sorted(seen) == sorted(keys)
        per_epoch.append(seen)
    assert per_epoch[0] != per_epoch[1]  # a new epoch is a new order


def test_epochs_are_deterministic_and_set_epoch_reaches_persistent_workers(shards, tokenizer):
    spec, _ = shards
    loader, info = build_train_loader(cfg_for(spec, workers=2), tokenizer)
    first = [b["__key__"] for b in epoch_batches(loader, info, 0)]
    second = [b["__key__"] for b in epoch_batches(loader, info, 1)]
    again = [b["__key__"] for b in epoch_batches(loader, info, 0)]
    assert first == again and first != second
    loader2, _ = build_train_loader(cfg_for(spec, workers=2), tokenizer, epoch=1)
    assert [b["__key__"] for b in loader2] == second


def _bad_shard_set(tmp_path):
    """Shards seeded with every kind of bad data; returns (spec, good keys, expected counts)."""
    jpeg = image_bytes("JPEG", size=(64, 48))
    mixed = good_samples(0, 4) + [
        {"__key__": "bad_trunc", "jpg": jpeg[: len(jpeg) // 2], "txt": "truncated jpeg"},
        {"__key__": "bad_garbage", "png": os.urandom(300), "txt": "garbage image"},
        {"__key__": "bad_empty", "png": image_bytes(), "txt": "   "},
        {"__key__": "bad_nocap", "png": image_bytes()},
        {"__key__": "bad_utf8", "png": image_bytes(), "txt": b"caption \xff\xfe\xfa"},
        {"__key__": "bad_noimg", "txt": "no image here", "json": b"{}"},
    ]
    write_shard(tmp_path / "00000.tar", mixed)
    (tmp_path / "00001.tar").write_bytes(os.urandom(4000))  # not a tar at all
    # 00002.tar is missing from the brace range.
    full = write_shard(tmp_path / "full.tar", good_samples(3, 3))
    with tarfile.open(full) as tar:
        members = tar.getmembers()
    cut = members[4].offset_data + members[4].size // 2  # inside the third sample's image: two whole samples
    (tmp_path / "00003.tar").write_bytes(full.read_bytes()[:cut])
    write_shard(tmp_path / "00004.tar", good_samples(4, 6))
    good = [f"000{i:04d}" for i in range(4)] + ["0030000", "0030001"] + [f"004{i:04d}" for i in range(6)]
    expected = {"bad_image": 2, "empty_caption": 2, "bad_text": 1, "missing_image": 1, "bad_shard": 3}
    return str(tmp_path / "{00000..00004}.tar"), good, expected


def test_bad_data_is_skipped_counted_and_reported(tmp_path, tokenizer, caplog):
    spec, good, expected = _bad_shard_set(tmp_path)
    urls = expand_shards(spec)
    # A seed whose shard order ends on the clean shard, so one epoch of all 12 good samples reads every
    # bad sample and shard exactly once.
    seed = next(s for s in range(100) if _first_pass(urls, s)[-1].endswith("00004.tar"))
    cfg = cfg_for(spec, batch_size=4, num_samples=12, shuffle_buffer=0, seed=seed)
    with caplog.at_level("WARNING", logger="sfclip.data"):
        loader, info = build_train_loader(cfg, tokenizer)
        batches = list(loader)
    assert "00002.tar" in caplog.text  # the missing shard is reported (main process and worker)
    assert "00001.tar" in caplog.text and "00003.tar" in caplog.text
    assert len(batches) == info.num_batches == 3 and all(len(b["__key__"]) == 4 for b in batches)
    assert sorted(k for b in batches for k in b["__key__"]) == sorted(good)
    total = Counter()
    for b in batches:
        total.update(b["skipped"])
    assert dict(total) == expected


@pytest.mark.parametrize("resampled", [False, True])
def test_bad_data_never_stops_multi_worker_training(tmp_path, tokenizer, resampled):
    spec, good, _ = _bad_shard_set(tmp_path)
    loader, info = build_train_loader(cfg_for(spec, workers=2, batch_size=4, num_samples=24, resampled=resampled),
                                      tokenizer)
    batches = list(loader)
    assert len(batches) == info.num_batches == 6
    assert all(len(b["__key__"]) == 4 for b in batches)
    assert {k for b in batches for k in b["__key__"]} <= set(good)
    assert sum(b["skipped"]["bad_shard"] for b in batches) >= 1


def test_wrong_path_fails_at_once_naming_it(tmp_path, tokenizer):
    spec = str(tmp_path / "nowhere" / "{00000..00009}.tar")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_train_loader(cfg_for(spec), tokenizer)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        build_train_loader(cfg_for(str(tmp_path / "missing.csv")), tokenizer)
    with pytest.raises(ValueError, match="train_data is empty"):
        build_train_loader(cfg_for(""), tokenizer)


def test_recipes_that_cannot_work_fail_at_once(shards, tokenizer):
    spec, _ = shards
    from sfclip.config import ConfigError

    with pytest.raises(ConfigError, match="4 shards but 5 ranks"):
        build_train_loader(cfg_for(spec, workers=2), tokenizer, rank=0, world_size=5)
    build_train_loader(cfg_for(spec, workers=2, resampled=True), tokenizer, rank=0, world_size=4)  # fine
    with pytest.raises(ValueError, match="num_samples"):
        build_train_loader(cfg_for(spec, num_samples=0), tokenizer)


def test_more_workers_than_shards_are_reduced_with_one_warning(shards, tokenizer, caplog):
    spec, keys = shards
    with caplog.at_level("WARNING", logger="sfclip.data"):
        loader, info = build_train_loader(cfg_for(spec, workers=2), tokenizer, rank=0, world_size=4)
    assert info.workers == 1 and loader.num_workers == 1
    assert "data.workers=2: 4 shards over 4 rank(s) can feed only 1 worker(s) per rank" in caplog.text
    assert len({k for b in loader for k in b["__key__"]}) == 6  # the worker reads its one shard
    assert build_train_loader(cfg_for(spec, workers=8), tokenizer, rank=1, world_size=2)[1].workers == 2


def test_epoch_size_is_read_beside_the_shards(shards, tmp_path):
    spec, _ = shards
    urls = expand_shards(spec)
    assert dataset_size(urls) is None
    for i in range(4):  # img2dataset's per-shard stats
        (tmp_path / f"{i:05d}_stats.json").write_text(json.dumps({"count": 9, "successes": 6}))
    assert dataset_size(urls) == 24
    (tmp_path / "sizes.json").write_text(json.dumps({f"{i:05d}.tar": 5 for i in range(4)}))
    assert dataset_size(urls) == 20  # sizes.json first, as open_clip
    assert dataset_size(urls[:2]) == 10


def test_shard_specs_join_with_double_colon_and_read_through_pipes(shards, tokenizer, tmp_path):
    _, keys = shards
    assert len(expand_shards(f"{tmp_path}/{{00000..00001}}.tar::{tmp_path}/{{00002..00003}}.tar")) == 4
    pipe = f"pipe:cat {tmp_path}/{{00000..00003}}.tar"
    loader, _ = build_train_loader(cfg_for(pipe), tokenizer)
    assert sorted(k for b in loader for k in b["__key__"]) == sorted(keys)


def _first_pass(urls: list[str], seed: int) -> list[str]:
    order = []
    for url in WebDatasetSource(urls, seed=seed).shard_order(0, 0, 1):
        if url is None:
            return order
        order.append(url)
    raise AssertionError("unreachable")


def _five_samples_cut(tmp_path, how: str):
    """A shard of five whole samples whose end is broken: cut at a member boundary, or a corrupt header."""
    full = write_shard(tmp_path / "full.tar", good_samples(7, 5))
    with tarfile.open(full) as tar:
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers())  # end of the last member
    data = full.read_bytes()[:end]  # no end-of-archive marker
    if how == "corrupt_header":
        data += b"\x17not a tar header" * 32 + b"\0" * 1024
    path = tmp_path / f"{how}.tar"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("how", ["member_boundary", "corrupt_header"])
def test_the_whole_samples_before_a_broken_tail_are_all_kept(tmp_path, how):
    from sfclip.data.wds import read_shard

    counts = Counter()
    keys = [s["__key__"] for s in read_shard(_five_samples_cut(tmp_path, how), counts)]
    assert keys == [f"007{i:04d}" for i in range(5)]  # the fifth (last) whole sample too
    assert counts == {"bad_shard": 1}


def test_a_sample_cut_inside_a_member_is_dropped_and_counted_as_bad_shard(tmp_path):
    from sfclip.data.wds import read_shard

    full = write_shard(tmp_path / "full.tar", good_samples(7, 3))
    with tarfile.open(full) as tar:
        image = [m for m in tar.getmembers() if m.name.startswith("0070002")][0]
    (tmp_path / "cut.tar").write_bytes(full.read_bytes()[:image.offset_data + image.size // 2])
    counts = Counter()
    keys = [s["__key__"] for s in read_shard(str(tmp_path / "cut.tar"), counts)]
    assert keys == ["0070000", "0070001"]  # the cut third sample is not passed on half-read
    assert counts == {"bad_shard": 1}


def test_training_reads_every_image_format_evaluation_reads(tmp_path, tokenizer):
    from sfclip.eval.shards import IMAGE_EXTS as EVAL_EXTS
    from sfclip.eval.shards import find_image, index_shards

    samples = [{"__key__": f"k{i}", "bmp": image_bytes("BMP", seed=i), "txt": f"a photo of caption {i}"}
               for i in range(4)]
    spec = str(write_shard(tmp_path / "bmp.tar", samples))
    loader, _ = build_train_loader(cfg_for(spec, batch_size=2, num_samples=4, shuffle_buffer=0), tokenizer)
    batches = list(loader)
    assert sorted(k for b in batches for k in b["__key__"]) == ["k0", "k1", "k2", "k3"]
    assert sum(b["skipped"]["missing_image"] for b in batches) == 0
    assert [find_image(s).name for s in index_shards(spec)] == [f"k{i}.bmp" for i in range(4)]
    from sfclip.data.wds import IMAGE_EXTS as TRAIN_EXTS

    assert TRAIN_EXTS is EVAL_EXTS


def test_globs_expand_sorted_and_an_unmatched_glob_is_kept_to_be_reported(shards, tmp_path):
    assert expand_shards(str(tmp_path / "*.tar")) == [str(tmp_path / f"{i:05d}.tar") for i in range(4)]
    assert expand_shards(str(tmp_path / "nothing-*.tar")) == [str(tmp_path / "nothing-*.tar")]
    assert expand_shards("pipe:cat /x/[ab].tar") == ["pipe:cat /x/[ab].tar"]  # commands are never globbed
