"""Caption tokenization: a thin wrapper over a transformers fast tokenizer.

The student text tower uses its text teacher's tokenizer (embedding inheritance), so the wrapper only
fixes the context length, pads to it (fixed shapes), and exposes the special-token ids that pooling and
masking need.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["Tokenizer", "load_tokenizer"]


class Tokenizer:
    """Batched tokenization to fixed length with the special ids the model and masking need."""

    def __init__(self, hf_tokenizer, context_length: int = 77, prefix: str = "") -> None:
        if not getattr(hf_tokenizer, "is_fast", False):
            raise ValueError(f"{type(hf_tokenizer).__name__} is not a fast tokenizer; sfclip needs one for "
                             "batched tokenization (install `tokenizers` and load with use_fast=True)")
        if hf_tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)")
        self.hf = hf_tokenizer
        self.context_length = context_length
        # Text prefix the teacher was trained with, e.g. E5's "query: ".
        self.prefix = prefix

    def __call__(self, texts: str | list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        if self.prefix:
            texts = [self.prefix + t for t in texts]
        enc = self.hf(texts, padding="max_length", truncation=True, max_length=self.context_length,
                      return_tensors="pt", return_token_type_ids=False)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def pad_id(self) -> int:
        return int(self.hf.pad_token_id)

    @property
    def bos_id(self) -> int | None:
        """The sequence-start token (BERT [CLS], XLM-R <s>)."""
        tid = self.hf.cls_token_id if self.hf.cls_token_id is not None else self.hf.bos_token_id
        return None if tid is None else int(tid)

    @property
    def eos_id(self) -> int | None:
        """The sequence-end token (BERT [SEP], XLM-R </s>)."""
        tid = self.hf.sep_token_id if self.hf.sep_token_id is not None else self.hf.eos_token_id
        return None if tid is None else int(tid)

    @property
    def mask_id(self) -> int | None:
        return None if self.hf.mask_token_id is None else int(self.hf.mask_token_id)

    @property
    def special_ids(self) -> list[int]:
        """Ids that masking must never touch."""
        return sorted({int(i) for i in self.hf.all_special_ids})

    def save(self, path: str | Path) -> None:
        """Save the tokenizer files plus sfclip's settings next to them."""
        path = Path(path)
        self.hf.save_pretrained(path)
        (path / "sfclip_tokenizer.txt").write_text(f"{self.context_length}\n{self.prefix}\n", encoding="utf-8")


def load_tokenizer(path_or_id: str | Path, context_length: int | None = None, prefix: str | None = None) -> Tokenizer:
    """Load a fast tokenizer from a folder (or hub id) and wrap it."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(path_or_id), use_fast=True)
    saved = Path(path_or_id) / "sfclip_tokenizer.txt"
    ctx, pre = 77, ""
    if saved.is_file():
        lines = saved.read_text(encoding="utf-8").split("\n")
        ctx, pre = int(lines[0]), (lines[1] if len(lines) > 1 else "")
    return Tokenizer(hf, context_length if context_length is not None else ctx,
                     prefix if prefix is not None else pre)
