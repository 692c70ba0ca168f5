"""Measure training-data throughput (samples/s per rank) to size `DataConfig.workers`.

    python -m sfclip.data.benchmark --workers 2 --batch-size 64 --teacher-sizes 224
    python -m sfclip.data.benchmark --train-data '/data/{00000..00099}.tar' --num-samples 1000000 \
        --tokenizer /path/to/tokenizer --workers 8

Without `--train-data` it writes synthetic img2dataset-like shards (256px JPEGs + captions) to a temp
folder first. Without `--tokenizer` it uses a tiny word-level tokenizer (tokenization is a small share).
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .config import DataConfig
from .loader import build_train_loader

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

    from ..tokenizer import Tokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]")
    return Tokenizer(hf, context_length)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-data", default="")
    parser.add_argument("--num-samples", type=int, default=0)
    parser.add_argument("--tokenizer", default="")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--teacher-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--batches", type=int, default=30, help="timed batches, after 2 warm-up batches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        spec, num_samples = args.train_data, args.num_samples
        if not spec:
            per_shard = max(64, (args.batches + 2) * args.batch_size // max(1, args.workers) + args.batch_size)
            spec = write_synthetic_shards(Path(tmp), max(1, args.workers), per_shard)
            num_samples = per_shard * max(1, args.workers)
        if args.tokenizer:
            from ..tokenizer import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer)
        else:
            tokenizer = tiny_tokenizer()
        cfg = DataConfig(train_data=spec, num_samples=num_samples, workers=args.workers, batch_size=args.batch_size,
                         image_size=args.image_size, teacher_sizes=args.teacher_sizes, shuffle_buffer=256)
        loader, _ = build_train_loader(cfg, tokenizer)
        it = iter(loader)
        for _ in range(2):  # worker start-up and shuffle-buffer fill
            next(it)
        start, n = time.perf_counter(), 0
        for _ in range(args.batches):
            n += len(next(it)["__key__"])
        elapsed = time.perf_counter() - start
        print(f"{n / elapsed:.0f} samples/s ({n} samples in {elapsed:.1f}s; workers={args.workers}, "
              f"batch={args.batch_size}, image={args.image_size}, teachers={args.teacher_sizes})")


if __name__ == "__main__":
    main()
