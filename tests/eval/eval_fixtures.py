"""Helpers for the evaluator tests: a tiny tokenizer, colour-oracle models and tiny dataset writers.

Colour = class everywhere: images are solid colours (or blocks of colour aligned to the patch grid), and
the oracle reads the colour back. Its image embedding is the one-hot of the nearest palette colour; its
text embedding is the one-hot of the colour word in the text (English or German), or a "junk" direction
for texts without one. So the right answer is always the most similar, and a `shift` makes a model
that is confidently wrong.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sfclip.eval.images import CLIP_MEAN, CLIP_STD
from sfclip.tokenizer import Tokenizer

COLOURS = {  # name -> RGB; the order is the embedding dimension
    "red": (230, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 230), "yellow": (230, 230, 20),
    "cyan": (20, 220, 220), "magenta": (220, 20, 220), "black": (5, 5, 5),
}
NAMES = list(COLOURS)
GERMAN = {"rot": "red", "gruen": "green", "blau": "blue", "gelb": "yellow", "tuerkis": "cyan",
          "lila": "magenta", "schwarz": "black"}
SYNONYMS = {"background": "black", **GERMAN}
FILLER = "a an the photo of image one picture ein foto von das bild .".split()
E = len(COLOURS) + 1  # + a junk direction for texts naming no colour
PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 255  # (K, 3)


def build_tokenizer(context_length: int = 16) -> Tokenizer:
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = NAMES + list(SYNONYMS) + FILLER
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = HFTok(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                 cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return Tokenizer(hf, context_length=context_length)


class _Visual(nn.Module):
    def __init__(self, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size


class ColourOracle(nn.Module):
    """Reads colours from pixels and colour words from token ids (see the module docstring).

    shift: image-side class index i becomes (i + shift) % K (a wrong model); constant: every embedding
    is the same (a useless model). Records whether each call ran in inference and eval mode.
    """

    def __init__(self, tokenizer: Tokenizer, image_size: int = 32, patch_size: int = 8, shift: int = 0,
                 constant: bool = False) -> None:
        super().__init__()
        self.visual = _Visual(image_size, patch_size)
        self.proj = nn.Linear(2, 2)  # a parameter, so the runners' device check has something to read
        self.shift, self.constant = shift, constant
        ids = tokenizer.hf.convert_tokens_to_ids
        table = torch.full((tokenizer.vocab_size,), -1, dtype=torch.long)
        for name in NAMES:
            table[ids(name)] = NAMES.index(name)
        for word, name in SYNONYMS.items():
            table[ids(word)] = NAMES.index(name)
        self.register_buffer("word_class", table)
        self.calls: list[tuple[bool, bool]] = []

    def _record(self) -> None:
        self.calls.append((torch.is_inference_mode_enabled(), self.training))

    def _one_hot(self, rgb: torch.Tensor) -> torch.Tensor:  # (..., 3) in [0, 1] -> (..., E)
        if self.constant:
            return torch.ones(*rgb.shape[:-1], E, device=rgb.device)
        idx = torch.cdist(rgb.reshape(-1, 3), PALETTE.to(rgb.device)).argmin(1).reshape(rgb.shape[:-1])
        idx = (idx + self.shift) % len(NAMES)
        return F.one_hot(idx, E).float()

    def _unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
        return images * std + mean

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        self._record()
        return F.normalize(self._one_hot(self._unnormalize(images).mean((2, 3))), dim=-1)  # (B, E)

    def encode_text(self, input_ids, attention_mask=None, normalize: bool = True) -> torch.Tensor:
        self._record()
        cls = self.word_class[input_ids]  # (B, T)
        out = torch.zeros(input_ids.shape[0], E, device=input_ids.device)
        for b, row in enumerate(cls):
            found = row[row >= 0]
            out[b, found[0] if len(found) else E - 1] = 1.0
        return out

    def encode_patches(self, images: torch.Tensor, normalize: bool = True, readout: str = "plain") -> torch.Tensor:
        self._record()
        p = self.visual.patch_size
        rgb = F.avg_pool2d(self._unnormalize(images), p).permute(0, 2, 3, 1)  # (B, h, w, 3)
        return F.normalize(self._one_hot(rgb), dim=-1)  # (B, h, w, E)

    def forward_features(self, images: torch.Tensor) -> dict:
        self._record()
        p = self.visual.patch_size
        rgb = F.avg_pool2d(self._unnormalize(images), p).permute(0, 2, 3, 1)  # (B, h, w, 3)
        h, w = rgb.shape[1:3]
        patch = self._one_hot(rgb).reshape(images.shape[0], h * w, E)  # (B, N, E)
        return {"cls": self._one_hot(self._unnormalize(images).mean((2, 3))), "patch": patch, "grid": (h, w)}


# ---- writers for tiny datasets ------------------------------------------------------------------------

def solid(name: str, size=(40, 32)) -> Image.Image:
    """A solid-colour RGB image of (width, height) `size`."""
    return Image.new("RGB", size, COLOURS[name])


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path: Path, samples: list[dict[str, bytes | str]]) -> Path:
    """Samples are dicts ext -> content with a `__key__`."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, content in sample.items():
                if ext == "__key__":
                    continue
                data = content.encode() if isinstance(content, str) else content
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def block_image(labels: np.ndarray, block: int) -> tuple[Image.Image, np.ndarray]:
    """Image and mask from a grid of class indices (into NAMES), each cell `block` pixels square."""
    mask = np.kron(labels, np.ones((block, block), dtype=np.int64))
    rgb = (PALETTE[torch.from_numpy(mask)].numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(rgb), mask


def save_mask(mask: np.ndarray, path: Path, palette_png: bool = False) -> None:
    arr = np.ascontiguousarray(mask.astype(np.uint8))
    if not palette_png:
        Image.fromarray(arr).save(path)
        return
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    img.putpalette([c for i in range(256) for c in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    img.save(path)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path
