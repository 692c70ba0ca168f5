"""Shared fixtures: tiny tokenizers and tiny transformers teachers written to disk, loaded like hub models."""

from __future__ import annotations

import json
import os
from pathlib import Path

# Tests never reach a model hub: fail fast instead of retrying a closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

WORDS = ("a photo of the red green blue yellow cat dog car tree house on left right top bottom grass brick "
         "small big sky with and two one is").split()


def make_tiny_tokenizer(path: Path):
    """A WordLevel fast tokenizer with BERT-style specials, saved to `path`."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = HFTok(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]")
    hf.save_pretrained(path)
    return hf


@pytest.fixture(scope="session")
def tiny_text_teacher_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT with the tiny tokenizer, saved as a transformers folder."""
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny_bert")
    hf = make_tiny_tokenizer(path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(hf), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=64)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vision_teacher_dir(tmp_path_factory) -> Path:
    """A 2-layer DINOv2 with patch 4 (16 px -> 4x4 grid), saved with its image processor config."""
    from transformers import Dinov2Config, Dinov2Model

    path = tmp_path_factory.mktemp("tiny_dinov2")
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=20, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
                       patch_size=4, image_size=16)
    Dinov2Model(cfg).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BitImageProcessor", "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "crop_size": {"height": 16, "width": 16},
        "size": {"shortest_edge": 16}, "do_center_crop": True}))
    return path
