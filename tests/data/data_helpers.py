"""Helpers for the data tests: a tiny fast tokenizer, small encoded images, shard writers."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

WORDS = "a photo of the red green blue cat dog on left right small big image sample caption".split()


def make_tokenizer(context_length: int = 12):
    """A WordLevel fast tokenizer with BERT-style specials and [CLS] $A [SEP], wrapped for sfclip."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from sfclip.tokenizer import Tokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    rust = RustTokenizer(models.WordLevel(unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.train_from_iterator([" ".join(WORDS), "a photo of a cat", "caption 0 1 2 3 4 5 6 7 8 9"],
                             trainers.WordLevelTrainer(special_tokens=specials))
    rust.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, rust.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]")
    return Tokenizer(hf, context_length=context_length)



def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 32), seed: int = 0, mode: str = "RGB") -> bytes:
    """A small image of random blocks (so crops differ) encoded as `fmt`."""
    rng = random.Random(seed)
    img = Image.new(mode, size)
    for x0 in range(0, size[0], 8):
        for y0 in range(0, size[1], 8):
            colour = tuple(rng.randrange(256) for _ in range(len(mode)))
            img.paste(colour if len(colour) > 1 else colour[0], (x0, y0, x0 + 8, y0 + 8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict]) -> Path:
    """Write samples (dicts of extension -> bytes/str, with `__key__`) as one tar shard."""
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


def good_samples(shard: int, n: int) -> list[dict]:
    """n decodable samples; formats rotate png / jpg / webp; keys are unique across shards."""
    fmts = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")]
    out = []
    for i in range(n):
        ext, fmt = fmts[i % 3]
        out.append({"__key__": f"{shard:03d}{i:04d}", ext: image_bytes(fmt, seed=shard * 1000 + i),
                    "txt": f"a photo of caption {i % 10}"})
    return out

