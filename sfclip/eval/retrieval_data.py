"""Image-caption sets for retrieval: several captions per image, any language.

Layouts (`data_format`, "auto" guesses from the path):
- `karpathy`: the COCO / Flickr30k Karpathy-split JSON, `{"images": [{"filename", "filepath"?, "split",
  "sentences": [{"raw"}]}]}`; images live at `image_root/filepath/filename` (`image_root` defaults to
  the JSON's folder); only entries of `split` are kept.
- `jsonl`: one image a line, `{"image": "rel/path.jpg", "captions": [...]}` or, multilingual (XTD,
  Crossmodal-3600 converted), `{"image": ..., "captions": {"en": [...], "de": [...]}}`, with `language`
  choosing. Crossmodal-3600's own `captions.jsonl` (`{"image/key": k, "<lang>": {"caption": [...]}}`)
  is read as is, with images at `image_root/<key>.jpg`. Paths are relative to `image_root` (default:
  the file's folder).
- `wds`: local WebDataset shards with an image and either `txt` (one caption a line) or `json` (a list
  of captions, `{"captions": [...]}`, or a dict language -> list).
Images without a caption (in the chosen language) are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from sfclip.eval.images import open_image
from sfclip.eval.shards import Member, find_image, index_shards, read_json, read_text

__all__ = ["CaptionedImages", "retrieval_dataset"]

Source = Path | Member


class CaptionedImages(Dataset):
    """Images with their captions; items are (transformed image, index)."""

    def __init__(self, images: Sequence[Source], captions: Sequence[Sequence[str]],
                 transform: Callable[[Image.Image], Tensor] | None = None) -> None:
        kept = [(s, list(c)) for s, c in zip(images, captions, strict=True) if c]
        self.sources = [s for s, _ in kept]
        self.captions = [c for _, c in kept]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.sources)

    def image(self, i: int) -> Image.Image:
        source = self.sources[i]
        return open_image(source)

    def __getitem__(self, i: int):
        img = self.image(i)
        return (self.transform(img) if self.transform else img), i

    def flat_captions(self) -> tuple[list[str], list[int]]:
        """All captions in order and, for each, its image index."""
        texts, owners = [], []
        for i, caps in enumerate(self.captions):
            texts.extend(caps)
            owners.extend([i] * len(caps))
        return texts, owners


def _by_language(value, language: str | None, where: str) -> list[str]:
    if isinstance(value, dict):
        if language is None:
            if len(value) != 1:
                raise ValueError(f"{where}: captions in {sorted(value)}; pass language")
            return list(next(iter(value.values())))
        return list(value.get(language, []))
    return [value] if isinstance(value, str) else list(value)


def _karpathy(path: Path, split: str | None, image_root: Path) -> CaptionedImages:
    entries = json.loads(path.read_text("utf-8"))["images"]
    entries = [e for e in entries if split is None or e.get("split") == split]
    sources = [image_root / e.get("filepath", "") / e["filename"] for e in entries]
    captions = [[s["raw"].strip() for s in e["sentences"]] for e in entries]
    return CaptionedImages(sources, captions)


def _jsonl(path: Path, language: str | None, image_root: Path) -> CaptionedImages:
    sources, captions = [], []
    for n, line in enumerate(path.read_text("utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "image/key" in row:  # Crossmodal-3600's own layout
            sources.append(image_root / f"{row['image/key']}.jpg")
            lang = language or "en"
            captions.append(list(row.get(lang, {}).get("caption", [])))
        else:
            sources.append(image_root / row["image"])
            captions.append(_by_language(row["captions"], language, f"{path}:{n + 1}"))
    return CaptionedImages(sources, captions)


def _wds(spec, language: str | None) -> CaptionedImages:
    sources, captions = [], []
    for sample in index_shards(spec):
        if "txt" in sample:
            caps = [c.strip() for c in read_text(sample["txt"]).splitlines() if c.strip()]
        elif "json" in sample:
            value = read_json(sample["json"])
            if isinstance(value, dict) and "captions" in value:
                value = value["captions"]
            caps = _by_language(value, language, sample["__key__"])
        else:
            raise ValueError(f"sample {sample['__key__']} has neither .txt nor .json captions")
        sources.append(find_image(sample))
        captions.append(caps)
    return CaptionedImages(sources, captions)


def retrieval_dataset(data: str | Path | Sequence[str], data_format: str = "auto", split: str | None = "test",
                      language: str | None = None, image_root: str | Path | None = None) -> CaptionedImages:
    """Open an image-caption set in one of the layouts of the module docstring."""
    fmt = data_format
    if fmt == "auto":
        suffix = Path(data).suffix.lower() if isinstance(data, (str, Path)) else ""
        fmt = {".json": "karpathy", ".jsonl": "jsonl"}.get(suffix, "wds")
    if fmt in ("karpathy", "jsonl"):
        path = Path(data)
        root = Path(image_root) if image_root is not None else path.parent
        dataset = _karpathy(path, split, root) if fmt == "karpathy" else _jsonl(path, language, root)
    elif fmt == "wds":
        dataset = _wds(data, language)
    else:
        raise ValueError(f"data_format must be auto, karpathy, jsonl or wds; got {data_format!r}")
    if len(dataset) == 0:
        raise ValueError(f"no captioned images in {data} (split={split!r}, language={language!r})")
    return dataset
