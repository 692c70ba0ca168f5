"""Before and after of each speed change, side by side in one run (the "before" code is kept here).

- block masks: the per-image Python loop sfclip had (copied below from commit 2f4f8f2) against the
  batched rounds of `sfclip.masking.block_patch_mask`, at the batch sizes a step draws masks for
  (p = 0.25 of 32 on this CPU, of 256 on a GPU, and the shared view's whole batch of 256);
- caption padding: training steps with the trailing all-padding caption columns kept (the old
  full-width path, restored by patching `sfclip.objective.padded_length`) and dropped, for plain CLIP
  and for SF-CLIP p = 0.25 with live teachers; and the evaluators' `encode_texts` (patching
  `sfclip.models.clip.trim_padding`).

    python benchmarks/optimizations.py
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sfclip.models.clip as clip_mod
import sfclip.objective as objective_mod
from benchmarks.common import build_setting, make_batch, make_teachers, step_fn
from benchmarks.harness import (
    interleaved,
    machine_state,
    markdown_table,
    median,
    round_ratio,
    set_threads,
    write_json,
)
from sfclip.masking import block_patch_mask


def _block_mask_one(h: int, w: int, num_masked: int, min_block: int, rng: np.random.Generator,
                    min_aspect: float = 0.3) -> np.ndarray:
    """Before: BEiT's block-wise masking for one image (sfclip/masking.py at 2f4f8f2)."""
    mask = np.zeros((h, w), dtype=bool)
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    count = 0
    while count < num_masked:
        budget = num_masked - count
        delta = 0
        for _ in range(10):
            area = rng.uniform(min(min_block, budget), budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < bh <= h and 0 < bw <= w:
                top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
                new = bh * bw - mask[top:top + bh, left:left + bw].sum()
                if 0 < new <= budget:
                    mask[top:top + bh, left:left + bw] = True
                    delta = int(new)
                    break
        if delta == 0:
            break
        count += delta
    flat = mask.reshape(-1)
    if count < num_masked:
        free = np.flatnonzero(~flat)
        flat[rng.choice(free, num_masked - count, replace=False)] = True
    return flat


def block_mask_per_image(batch: int, grid: tuple[int, int], num_masked: int, rng: np.random.Generator) -> torch.Tensor:
    h, w = grid
    min_block = max(1, int(round(0.08 * h * w)))
    return torch.from_numpy(np.stack([_block_mask_one(h, w, num_masked, min_block, rng) for _ in range(batch)]))


@contextmanager
def full_width_captions():
    """Before: the objective runs every caption column, padding included."""
    real = objective_mod.padded_length
    objective_mod.padded_length = lambda am: torch.tensor(am.shape[1])
    try:
        yield
    finally:
        objective_mod.padded_length = real


@contextmanager
def full_width_encode_text():
    """Before: `encode_text` runs every caption column, padding included."""
    real = clip_mod.trim_padding
    clip_mod.trim_padding = lambda ids, am: (ids, am)
    try:
        yield
    finally:
        clip_mod.trim_padding = real


def eval_text_rows(args) -> list[dict]:
    from benchmarks.common import VOCAB, filler_tokenizer
    from benchmarks.eval_throughput import captions
    from sfclip.eval.inference import encode_texts, evaluating
    from sfclip.models import create_model
    from sfclip.tokenizer import Tokenizer

    model = create_model(args.model, text={"vocab_size": VOCAB})
    tok = Tokenizer(filler_tokenizer(), model.cfg.text.context_length)
    texts = [c for caps in captions(256, 5) for c in caps]
    cpu = torch.device("cpu")

    def before():
        with full_width_encode_text():
            encode_texts(model, tok, texts, cpu, 256, progress=False)

    def after():
        encode_texts(model, tok, texts, cpu, 256, progress=False)

    with evaluating(model):
        times = interleaved({"before": before, "after": after}, args.rounds, cpu)
    return [row(f"caption padding skipped: encode_texts, {len(texts)} captions", times, "before", "after", 0)]


def mask_rows(args) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for b in (8, 64, 256):
        fns = {"before": lambda b=b: block_mask_per_image(b, (14, 14), 78, rng),
               "after": lambda b=b: block_patch_mask(b, (14, 14), 78, rng)}
        times = interleaved(fns, args.mask_rounds, torch.device("cpu"))
        rows.append(row(f"block mask, {b} rows of 14x14, 40%", times, "before", "after", 2))
    return rows


def padding_rows(args) -> tuple[list[dict], dict]:
    device = torch.device("cpu")
    teachers = make_teachers(args.model, device)
    runs = {"clip": build_setting(args.model, teachers, device, p=0.0, teachers_on=False),
            "p=0.25 replace": build_setting(args.model, teachers, device, p=0.25)}
    batch = make_batch(runs["clip"][1], args.model, args.batch, device, teachers)
    fns = {}
    for name, (obj, _, opt, cached) in runs.items():
        def after(obj=obj, opt=opt, cached=cached):
            step_fn(obj, opt, batch, cached, "fp32")

        def before(obj=obj, opt=opt, cached=cached):
            with full_width_captions():
                step_fn(obj, opt, batch, cached, "fp32")
        fns[f"{name}, before"], fns[f"{name}, after"] = before, after
    times = interleaved(fns, args.rounds, device)
    rows = [row(f"caption padding skipped: {name} step", times, f"{name}, before", f"{name}, after", 0)
            for name in runs]
    # SF-CLIP's cost over plain CLIP, with each code: "before_ms" here holds the old code's ratio.
    cpu = times.cpu
    rows.append({"change": "p=0.25 replace / clip step",
                 "before": round(round_ratio(cpu, "p=0.25 replace, before", "clip, before"), 3),
                 "after": round(round_ratio(cpu, "p=0.25 replace, after", "clip, after"), 3), "after_vs_before": "",
                 "after_vs_before_wall": ""})
    lengths = batch["attention_mask"].sum(1)
    return rows, {"caption_lengths": [int(lengths.min()), int(lengths.max())], "wall_s": times.wall, "cpu_s": times.cpu}


def row(change: str, times, before: str, after: str, digits: int) -> dict:
    """Median CPU milliseconds before and after, and the after/before ratio by CPU and by wall time."""
    return {"change": change, "before": round(1000 * median(times.cpu[before]), digits),
            "after": round(1000 * median(times.cpu[after]), digits),
            "after_vs_before": round(round_ratio(times.cpu, after, before), 3),
            "after_vs_before_wall": round(round_ratio(times.wall, after, before), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit-t-16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--mask-rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; default 1, see harness")
    ap.add_argument("--out", default="benchmarks/results/optimizations.json")
    args = ap.parse_args()
    args.threads = set_threads(args.threads, "cpu")
    state_before = machine_state()
    rows = mask_rows(args)
    pad_rows, extra = padding_rows(args)
    rows += pad_rows + eval_text_rows(args)
    shortest, longest = extra["caption_lengths"]
    print(f"model {args.model}, batch {args.batch}, captions {shortest}..{longest} "
          f"of 77 tokens, threads {args.threads}, {args.rounds} interleaved rounds (masks: {args.mask_rounds}); "
          f"before/after in CPU milliseconds (median), ratios as medians of per-round ratios; machine {state_before}")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "machine_before": state_before, "machine_after": machine_state(),
                          "rows": rows, **extra})


if __name__ == "__main__":
    main()
