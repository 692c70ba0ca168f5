"""Fixtures for training tests: learnable synthetic shards (colour words match image colours) and recipes."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import yaml
from PIL import Image

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


@pytest.fixture
def recipe_writer():
    """`write_recipe(path, shards, vision_dir, text_dir, out_dir, **dotted_overrides) -> path`."""
    return write_recipe


@pytest.fixture
def shard_writer():
    """`write_pair_shards(root, num_shards, per_shard, seed) -> brace spec`."""
    return write_pair_shards
