"""Shared fixtures: tiny tokenizers and tiny transformers teachers written to disk, loaded like hub models."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

# Tests never reach a model hub: fail fast instead of retrying a closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# "auto" dtypes mean fp32 in the suite on every CPU kind (sfclip.precision), so that no test depends on which
# CPU runs it; CI runs the precision-sensitive tests again with SFCLIP_BF16=1 (.ci/run), and tests about the
# rule itself clear the variable.
os.environ.setdefault("SFCLIP_BF16", "0")

import pytest
import torch
import yaml
from PIL import Image

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


# -- learnable synthetic image-text shards and recipes for training tests -------------------------
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
OBJECTS = ["cat", "dog", "car", "tree"]


def png(colour: tuple[int, int, int], rng: random.Random, size: int = 40) -> bytes:
    img = Image.new("RGB", (size, size), colour)
    for _ in range(6):  # a few noise squares so crops differ
        x, y = rng.randrange(size - 6), rng.randrange(size - 6)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 6, y + 6))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_pair_shards(root: Path, num_shards: int = 4, per_shard: int = 16, seed: int = 0) -> str:
    import webdataset as wds

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for s in range(num_shards):
        with wds.TarWriter(str(root / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                colour = rng.choice(list(COLOURS))
                obj = rng.choice(OBJECTS)
                sink.write({"__key__": f"{s:03d}{i:04d}", "png": png(COLOURS[colour], rng),
                            "txt": f"a photo of a {colour} {obj}"})
    return str(root / f"{{00000..{num_shards - 1:05d}}}.tar")


@pytest.fixture
def pair_shards(tmp_path) -> str:
    return write_pair_shards(tmp_path / "shards")


def write_recipe(path: Path, shards: str, vision_dir: Path, text_dir: Path, out_dir: Path, **extra) -> Path:
    recipe = {
        "name": "tiny",
        "output_dir": str(out_dir),
        "student": {"model": "test-tiny"},
        "objective": {"distill_fraction": 0.5,
                      "teachers": [{"name": "dino", "kind": "vision", "source": str(vision_dir)},
                                   {"name": "bert", "kind": "text", "source": str(text_dir)}]},
        "data": {"train_data": shards, "num_samples": 64, "batch_size": 8, "workers": 0, "image_size": 32,
                 "shuffle_buffer": 16},
        "optim": {"lr": 2e-3, "warmup_steps": 2, "weight_decay": 0.0},
        "train": {"steps": 24, "ckpt_every": 8, "keep_last": 2},
        "log": {"every_steps": 1, "progress": False},
    }
    for key, value in extra.items():
        node = recipe
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def recipe_writer():
    """`write_recipe(path, shards, vision_dir, text_dir, out_dir, **dotted_overrides) -> path`."""
    return write_recipe


@pytest.fixture(scope="session")
def shard_writer():
    """`write_pair_shards(root, num_shards, per_shard, seed) -> brace spec`."""
    return write_pair_shards


@pytest.fixture
def png_maker():
    """`png(colour, rng, size=40) -> bytes`: a solid-colour PNG with a few noise squares."""
    return png


# -- a tiny trained checkpoint and image collection, shared by tests/index and tests/app -----------
def _explore_fixtures():
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "index"))
    import explore_fixtures

    return explore_fixtures


@pytest.fixture(scope="session")
def explore_run(tmp_path_factory, tiny_vision_teacher_dir, tiny_text_teacher_dir, shard_writer, recipe_writer):
    return _explore_fixtures().train_checkpoint(tmp_path_factory.mktemp("explore_run"), tiny_vision_teacher_dir,
                                                tiny_text_teacher_dir, shard_writer, recipe_writer)


@pytest.fixture(scope="session")
def loaded(explore_run):
    """(model, tokenizer, transform) from `sfclip.load`."""
    import sfclip

    return sfclip.load(explore_run)


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    return _explore_fixtures().write_collection(tmp_path_factory.mktemp("collection"))
