"""Training-data throughput from WebDataset shards: images/s, and per worker, to size `DataConfig.workers`.

Each setting reads shards through the real training loader (`sfclip.data.build_train_loader`: tar
read, shuffle buffer, JPEG decode, random resized crop at the student size and at each teacher size,
normalize, tokenize, collate). `workers=0` runs in this process: one core's rate, no inter-process
copies. Settings run in alternating repeats (A B A B ...) so that a busy machine drifts all of them
alike, and each is reported as its median.

    python benchmarks/data_throughput.py                                  # synthetic shards, workers 0 1 2
    python benchmarks/data_throughput.py --teacher-sizes 224 --workers 0 2
    python benchmarks/data_throughput.py --train-data '/data/{00000..00099}.tar' --num-samples 1000000 \
        --tokenizer /path/to/tokenizer --workers 8

Without `--train-data` it writes synthetic img2dataset-like shards (256 px JPEGs and captions) to a
temporary folder first. Without `--tokenizer` it uses a tiny word-level tokenizer.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import machine_state, markdown_table, median, write_json
from sfclip.data.config import DataConfig
from sfclip.data.loader import build_train_loader

WORDS = "a photo of the red green blue cat dog on left right small big house car tree in with".split()


def write_synthetic_shards(folder: Path, shards: int, per_shard: int, size: int = 256) -> str:
    """JPEG shards with photo-like byte sizes (smooth colour fields plus noise)."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    for s in range(shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
                arr = np.asarray(img, dtype=np.int16) + rng.integers(-20, 20, (size, size, 3), dtype=np.int16)
                buf = io.BytesIO()
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
                caption = " ".join(rng.choice(WORDS, 12))
                sink.write({"__key__": f"{s:05d}{i:04d}", "jpg": buf.getvalue(), "txt": caption})
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def tiny_tokenizer(context_length: int = 77):
    """A word-level fast tokenizer over WORDS with BERT-style special tokens."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from sfclip.tokenizer import Tokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]")
    return Tokenizer(hf, context_length)


def images_per_s(spec: str, num_samples: int, tokenizer, args, workers: int) -> tuple[float, float]:
    """Samples per wall second of one fresh loader in steady state (between the arrivals of the first and
    the last of `args.batches` batches, after warm-up batches that drain what the workers prefetched),
    and per CPU second of this process (the whole cost when `workers` is 0)."""
    cfg = DataConfig(train_data=spec, num_samples=num_samples, workers=workers, batch_size=args.batch_size,
                     image_size=args.image_size, teacher_sizes=args.teacher_sizes, shuffle_buffer=256)
    loader, _ = build_train_loader(cfg, tokenizer)
    it = iter(loader)
    for _ in range(4):  # worker start-up, shuffle-buffer fill, and the prefetched batches (2 per worker)
        next(it)
    next(it)
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for _ in range(args.batches - 1):
        n += len(next(it)["__key__"])
    rate, cpu_rate = n / (time.perf_counter() - start), n / max(time.process_time() - cpu, 1e-9)
    del it, loader  # stop the workers before the next setting starts its own
    return rate, cpu_rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default="")
    parser.add_argument("--num-samples", type=int, default=0)
    parser.add_argument("--tokenizer", default="")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="settings to compare")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--teacher-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--batches", type=int, default=10, help="batches per repeat, after 4 warm-up batches")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/data_throughput.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # as in a DataLoader worker
    state_before = machine_state()
    with tempfile.TemporaryDirectory() as tmp:
        spec, num_samples = args.train_data, args.num_samples
        if not spec:
            shards = max(1, max(args.workers))
            per_shard = (args.batches + 6) * args.batch_size // shards + args.batch_size
            spec = write_synthetic_shards(Path(tmp), shards, per_shard)
            num_samples = per_shard * shards
        if args.tokenizer:
            from sfclip.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer)
        else:
            tokenizer = tiny_tokenizer()
        rates: dict[int, list[tuple[float, float]]] = {w: [] for w in args.workers}
        for _ in range(args.repeats):
            for w in args.workers:
                rates[w].append(images_per_s(spec, num_samples, tokenizer, args, w))
    rows = []
    for w, r in rates.items():
        wall = median([x for x, _ in r])
        rows.append({"workers": w, "images_per_s": round(wall, 1),
                     "images_per_s_per_worker": round(wall / max(1, w), 1),
                     "images_per_cpu_s": round(median([c for _, c in r]), 1) if w == 0 else "-",
                     "runs_wall": [round(x, 1) for x, _ in r]})
    print(f"batch {args.batch_size}, image {args.image_size}, teacher sizes {args.teacher_sizes}, "
          f"{args.batches} batches x {args.repeats} alternating repeats; workers=0 is in-process, one torch "
          f"thread (images_per_cpu_s: its decode+crop+tokenize cost, steady under other load); machine {state_before}")
    print(markdown_table(rows))
    write_json(args.out, {"args": vars(args), "machine_before": state_before, "machine_after": machine_state(),
                          "rows": rows})


if __name__ == "__main__":
    main()
