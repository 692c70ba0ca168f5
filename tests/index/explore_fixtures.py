"""Helpers shared by tests/index and tests/app: a tiny trained checkpoint and a tiny image collection.

Importable by name from tests/index (pytest puts a test folder on sys.path); tests/app adds this folder.
"""

from __future__ import annotations

import csv
import io
import random
import tarfile
from pathlib import Path

from PIL import Image

from sfclip.cli import main

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
OBJECTS = ["cat", "dog", "car", "tree"]


def picture(colour: str, rng: random.Random, size: int = 40) -> bytes:
    """A PNG of one colour with a few noise squares (so that no two pictures are equal)."""
    img = Image.new("RGB", (size, size), COLOURS[colour])
    for _ in range(6):
        x, y = rng.randrange(size - 6), rng.randrange(size - 6)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 6, y + 6))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_collection(root: Path, n: int = 20, seed: int = 0) -> dict:
    """`n` images as a folder (plus one broken file and a text file), a CSV over them (plus a row whose
    file is missing), and two shards (plus a third cut short: a bad shard that keeps its first samples)."""
    rng = random.Random(seed)
    folder = root / "images"
    folder.mkdir(parents=True)
    items = []
    for i in range(n):
        colour, obj = list(COLOURS)[i % 4], OBJECTS[(i // 4) % 4]
        name = f"{i:02d}_{colour}_{obj}.png"
        (folder / name).write_bytes(picture(colour, rng))
        items.append((name, f"a photo of a {colour} {obj}"))
    (folder / "broken.png").write_bytes(b"this is not a picture")
    (folder / "notes.txt").write_text("not an image file: ignored")
    table = root / "images.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "caption"])
        for name, caption in items:
            w.writerow([f"images/{name}", caption])
        w.writerow(["images/missing.png", "a photo of nothing"])
    shards = root / "shards"
    shards.mkdir()
    for s, part in enumerate((items[: n // 2], items[n // 2:], items[:4])):
        path = shards / f"{s:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for name, caption in part:
                key = f"s{s}_{Path(name).stem}"
                for ext, data in (("png", (folder / name).read_bytes()), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        if s == 2:  # cut inside the third sample: the first two are kept, the shard is counted bad
            data = path.read_bytes()
            path.write_bytes(data[: 512 * 9])
    return {"folder": folder, "csv": table, "shards": str(shards / "{00000..00002}.tar"), "items": items}


def train_checkpoint(root: Path, vision_dir: Path, text_dir: Path, shard_writer, recipe_writer) -> Path:
    """A `test-tiny` run trained for 10 steps through the real CLI; returns the run folder."""
    shards = shard_writer(root / "train_shards", 2, 16)
    recipe = recipe_writer(root / "r.yaml", shards, vision_dir, text_dir, root / "runs",
                           **{"train.steps": 10, "data.num_samples": 32, "log.progress": False})
    assert main(["train", str(recipe)]) == 0
    return root / "runs" / "tiny"
