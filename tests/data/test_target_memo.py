"""Text targets of repeated captions: the teacher runs once per distinct caption, and every row equals the
row of that caption computed on its own."""

import numpy as np
import torch

from sfclip.data.target_build import CaptionMemo, _text_targets
from sfclip.teachers.hf import load_hf_text
from sfclip.tokenizer import Tokenizer


def test_repeated_captions_run_once_and_match_single_runs(tiny_text_teacher_dir):
    teacher = load_hf_text("bert", str(tiny_text_teacher_dir))
    tok = Tokenizer(teacher.tokenizer, context_length=12)
    calls = []
    teacher.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    first = ["a red cat on grass", "a blue dog", "a red cat on grass", "the car"]
    second = ["a blue dog", "a photo of the big tree with a small house", "the car"]
    memo = CaptionMemo()
    a = _text_targets(first, tok(first), teacher, torch.device("cpu"), memo)
    b = _text_targets(second, tok(second), teacher, torch.device("cpu"), memo)
    assert calls == [3, 1]  # distinct captions only, and none twice across batches
    assert memo.misses == 4 and memo.hits == 3
    for batch, out in ((first, a), (second, b)):
        for caption, row in zip(batch, out):
            enc = tok([caption])
            n = int(enc["attention_mask"].sum())
            alone = teacher(enc["input_ids"][:, :n], enc["attention_mask"][:, :n])["tokens"][0].numpy()
            np.testing.assert_allclose(row[:n], alone, rtol=2e-3, atol=2e-3)  # fp16 storage
            assert not row[n:].any()  # padding stays zero


def test_a_full_memo_still_gives_every_row(tiny_text_teacher_dir):
    teacher = load_hf_text("bert", str(tiny_text_teacher_dir))
    tok = Tokenizer(teacher.tokenizer, context_length=12)
    caps = ["a red cat", "a red cat", "a blue dog"]
    full = _text_targets(caps, tok(caps), teacher, torch.device("cpu"), CaptionMemo(max_bytes=0))
    ref = _text_targets(caps, tok(caps), teacher, torch.device("cpu"), CaptionMemo())
    np.testing.assert_allclose(full, ref, rtol=2e-3, atol=2e-3)
    assert full[0].any() and np.array_equal(full[0], full[1])
