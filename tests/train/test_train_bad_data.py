"""A run over shards seeded with every kind of bad sample finishes and reports the right counts."""

import json
import random

import pytest
import webdataset as wds

from sfclip.config import load_config
from sfclip.train.loop import train


@pytest.mark.slow
def test_training_survives_and_counts_bad_samples(tmp_path, shard_writer, recipe_writer, tiny_vision_teacher_dir,
                                                  tiny_text_teacher_dir, png_maker):
    root = tmp_path / "shards"
    shard_writer(root, num_shards=3, per_shard=16)  # 00000..00002 are clean
    rng = random.Random(0)
    good = png_maker((200, 30, 30), rng)
    with wds.TarWriter(str(root / "00003.tar")) as sink:
        sink.write({"__key__": "bad_trunc", "png": good[: len(good) // 2], "txt": "a photo of a red cat"})
        sink.write({"__key__": "bad_garbage", "png": b"\x89PNG not really" * 20, "txt": "a photo of a red cat"})
        sink.write({"__key__": "bad_empty", "png": good, "txt": "   "})
        sink.write({"__key__": "bad_utf8", "png": good, "txt": b"a photo \xff\xfe of a cat"})
        sink.write({"__key__": "bad_noimage", "txt": "a photo of a red cat"})
        for i in range(16):
            sink.write({"__key__": f"ok{i:03d}", "png": png_maker((30, 200, 40), rng), "txt": "a photo of a green dog"})
    (root / "00004.tar").write_bytes(b"this is not a tar archive" * 100)
    # 00005.tar is missing from the brace range
    recipe = recipe_writer(tmp_path / "r.yaml", str(root / "{00000..00005}.tar"), tiny_vision_teacher_dir,
                           tiny_text_teacher_dir, tmp_path / "runs",
                           **{"data.num_samples": 64, "data.shuffle_buffer": 0, "data.seed": 3, "train.steps": 8,
                              "train.ckpt_every": 100})
    summary = train(load_config(recipe))
    assert summary["step"] == 8

    # Known answer: walk epoch 0's shard order until the 64th good sample (all of them) has been read.
    from sfclip.data.wds import WebDatasetSource, expand_shards

    order = WebDatasetSource(expand_shards(str(root / "{00000..00005}.tar")), seed=3).shard_order(0, 0, 1)
    want = {"bad_image": 0, "empty_caption": 0, "bad_text": 0, "missing_image": 0, "bad_shard": 0}
    good, read = 0, []
    while good < 64:
        url = next(order)
        if url is None:
            continue
        read.append(url)
        if url.endswith(("00004.tar", "00005.tar")):
            want["bad_shard"] += 1
        elif url.endswith("00003.tar"):  # its bad samples come before its 16 good ones
            want.update(bad_image=want["bad_image"] + 2, empty_caption=want["empty_caption"] + 1,
                        bad_text=want["bad_text"] + 1, missing_image=want["missing_image"] + 1)
            good += 16
        else:
            good += 16
    assert want["bad_image"] == 2  # shard 00003 holds needed good samples, so it is always read
    assert want["bad_shard"] == 2  # data.seed=3 puts both bad shards before the last good one

    rows = [json.loads(x) for x in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert {k: rows[-1][f"skipped/{k}"] for k in want} == want
    assert summary["skipped"] == want
    log = (tmp_path / "runs" / "tiny" / "train.log").read_text()
    for url in read:
        if url.endswith(("00004.tar", "00005.tar")):
            assert url.rsplit("/", 1)[1] in log
