"""CSV/TSV: round trip through the training loader, bad rows skipped and counted, clear column errors."""

from __future__ import annotations

import os
from collections import Counter
from itertools import takewhile

import pytest
import torch
from data_helpers import image_bytes

from sfclip.data import SKIP_REASONS, DataConfig, build_train_loader
from sfclip.data.csv import CsvSource, read_table
from sfclip.data.stream import PASS_END


def write_table(tmp_path, rows: list[tuple[str, str | bytes]], sep: str = ",", name: str = "data.csv",
                header: str = "filepath{sep}caption") -> str:
    """Rows of (relative image path, caption); images named `ok*` are written as PNGs under images/."""
    (tmp_path / "images").mkdir(exist_ok=True)
    lines = [header.format(sep=sep).encode()]
    for i, (path, caption) in enumerate(rows):
        if path.startswith("images/ok"):
            (tmp_path / path).write_bytes(image_bytes(seed=i))
        caption = caption if isinstance(caption, bytes) else caption.encode()
        lines.append(path.encode() + sep.encode() + caption)
    (tmp_path / name).write_bytes(b"\n".join(lines) + b"\n")
    return str(tmp_path / name)


def cfg_for(path: str, **kw) -> DataConfig:
    return DataConfig(**{**dict(train_data=path, batch_size=2, workers=0, image_size=16, seed=0), **kw})


def test_csv_round_trip_through_the_training_loader(tmp_path, tokenizer):
    path = write_table(tmp_path, [(f"images/ok{i}.png", f"a photo of caption {i}") for i in range(6)])
    loader, info = build_train_loader(cfg_for(path, teacher_sizes=[20]), tokenizer)
    batches = list(loader)
    assert info.num_batches == len(batches) == 3 and info.dataset_size == 6
    assert sorted(k for b in batches for k in b["__key__"]) == [str(i) for i in range(6)]
    b = batches[0]
    assert b["image"].shape == (2, 3, 16, 16) and b["teacher_image"][20].shape == (2, 3, 20, 20)
    assert b["input_ids"].shape == (2, tokenizer.context_length) and b["skipped"] == dict.fromkeys(SKIP_REASONS, 0)


def test_tsv_separator_is_picked_by_extension_and_two_workers_split_rows(tmp_path, tokenizer):
    rows = [(f"images/ok{i}.png", f"a, photo, of caption {i}") for i in range(8)]  # commas inside captions
    path = write_table(tmp_path, rows, sep="\t", name="data.tsv")
    loader, _ = build_train_loader(cfg_for(path, workers=2), tokenizer)
    keys = [k for b in loader for k in b["__key__"]]
    assert sorted(keys) == [str(i) for i in range(8)]


def bad_rows() -> list[tuple[str, str | bytes]]:
    return [
        ("images/ok0.png", "a photo of caption 0"),
        ("images/nothing_here.png", "the file is missing"),
        ("images/garbage.png", "the file is not an image"),
        ("images/ok3.png", "   "),
        ("images/ok4.png", b"caption \xff\xfe not utf-8"),
        ("images/ok5.png", "a photo of caption 5"),
    ]


def test_the_source_counts_each_bad_row_once_per_pass_before_decoding(tmp_path):
    path = write_table(tmp_path, bad_rows())
    (tmp_path / "images" / "garbage.png").write_bytes(os.urandom(100))
    counts: Counter = Counter()
    keys = list(takewhile(lambda s: s is not PASS_END, CsvSource(*read_table(path)).samples(0, 0, 1, counts)))
    # The undecodable image passes here: only decoding (in BatchStream) can tell, and counts it as bad_image.
    assert sorted(s["__key__"] for s in keys) == ["0", "2", "5"]
    assert counts == {"empty_caption": 1, "bad_text": 1, "missing_image": 1}


def test_training_loader_survives_bad_rows(tmp_path, tokenizer):
    path = write_table(tmp_path, bad_rows())
    (tmp_path / "images" / "garbage.png").write_bytes(os.urandom(100))
    loader, info = build_train_loader(cfg_for(path, num_samples=4), tokenizer)
    batches = list(loader)
    assert len(batches) == info.num_batches == 2 and all(len(b["__key__"]) == 2 for b in batches)
    assert {k for b in batches for k in b["__key__"]} == {"0", "5"}
    total = Counter()
    for b in batches:
        total.update(b["skipped"])
    assert total["bad_image"] >= 1 and total["missing_image"] >= 1 and total["bad_text"] >= 1
    assert all(isinstance(b["image"], torch.Tensor) for b in batches)


def test_missing_column_names_it_and_lists_the_columns_present(tmp_path, tokenizer):
    path = write_table(tmp_path, [("images/ok0.png", "x")], header="image{sep}text")
    with pytest.raises(ValueError, match=r"no column 'filepath'.*\['image', 'text'\]"):
        build_train_loader(cfg_for(path), tokenizer)
    loader, _ = build_train_loader(cfg_for(path, csv_img_key="image", csv_caption_key="text", batch_size=1), tokenizer)
    assert next(iter(loader))["__key__"] == ["0"]
