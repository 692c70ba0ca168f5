"""sfclip's evaluation sets in CLIP_benchmark's `wds/` layout, and that layout read back by `sfclip eval`.

`clip_benchmark eval --dataset wds/<name> --dataset_root <root>/wds_<name>` reads (its `build_wds_dataset`):

    wds_<name>/
        test/0.tar, test/1.tar, ...   samples `s0000000.png` (or .jpg/.jpeg/.webp) plus `.cls` (the class
                                      index) for classification, `.txt` (one caption a line) for retrieval
        test/nshards.txt              the shard count
        classnames.txt                classification: one class name a line, in label order
        zeroshot_classification_templates.txt   one template a line, `{c}` where the class name goes
        dataset_type.txt              "retrieval" for a retrieval set (absent: classification)

`export_classification` / `export_retrieval` write a set that `sfclip eval` reads (any of its layouts) in
that form, resolved exactly as sfclip's own runners resolve it: the same images, the same class names and
templates, the same captions, so that both tools score one set. An image is copied byte for byte when
CLIP_benchmark decodes it to the very pixels sfclip decodes (an RGB PNG, JPEG or WebP); otherwise (a mode
with transparency, an EXIF rotation, a format CLIP_benchmark does not read) it is sfclip's decoded RGB image
written as a lossless PNG. `read_wds` turns such a folder back into `sfclip eval` arguments.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sfclip.checkpoint import atomic_dir
from sfclip.eval.classification_data import LabeledImages, classification_dataset
from sfclip.eval.images import open_image
from sfclip.eval.prompts import ListSpec, load_classnames, load_templates
from sfclip.eval.retrieval_data import CaptionedImages, retrieval_dataset
from sfclip.eval.shards import Member, read_member

__all__ = ["PREFIX", "SCENE_SETS", "WdsSet", "export_classification", "export_retrieval", "export_scene_sets",
           "dataset_name", "is_wds_set", "read_wds"]

PREFIX = "wds_"  # CLIP_benchmark's own folder names: wds_<name> holds the dataset wds/<name>
# The scenes' evaluation sets (`sfclip scenes`, the demo) by CLIP_benchmark dataset name.
SCENE_SETS = {"classification": "scenes_classification", "retrieval": "scenes_retrieval"}
_READ_EXTS = ("webp", "png", "jpg", "jpeg")  # the image types CLIP_benchmark's wds reader decodes
_SHARD_SIZE = 10_000  # samples per tar, CLIP_benchmark's own default


def _source_bytes(source: Path | Member) -> bytes:
    return read_member(source) if isinstance(source, Member) else Path(source).read_bytes()


def _source_ext(source: Path | Member) -> str:
    name = source.name if isinstance(source, Member) else str(source)
    return Path(name).suffix.lower().lstrip(".")


def _image_entry(source: Path | Member) -> tuple[str, bytes]:
    """(extension, bytes) that CLIP_benchmark decodes (PIL, `.convert("RGB")`) to sfclip's own pixels."""
    data, ext = _source_bytes(source), _source_ext(source)
    ours = np.asarray(open_image(source))  # (H, W, 3) as sfclip's evaluators decode it
    if ext in _READ_EXTS:
        with Image.open(io.BytesIO(data)) as img:
            theirs = np.asarray(img.convert("RGB"))
        if theirs.shape == ours.shape and np.array_equal(theirs, ours):
            return ext, data
    buf = io.BytesIO()
    Image.fromarray(ours, mode="RGB").save(buf, format="PNG")
    return "png", buf.getvalue()


def _line(text: str, what: str) -> str:
    # CLIP_benchmark reads these files line by line and strips each line: a name must survive that unchanged.
    if "\n" in text or "\r" in text or text != text.strip() or not text:
        raise ValueError(f"{what} {text!r} cannot be one line of a CLIP_benchmark text file (empty, a line "
                         "break, or leading/trailing spaces)")
    return text


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _write_shards(split_dir: Path, samples) -> int:
    """Write (key, {ext: bytes}) samples as `split_dir/{0..n-1}.tar` plus `nshards.txt`; returns n."""
    import webdataset as wds

    split_dir.mkdir(parents=True)
    pattern = str(split_dir).replace("%", "%%") + "/%d.tar"  # ShardWriter fills it with the shard number
    sink = wds.ShardWriter(pattern, maxcount=_SHARD_SIZE, verbose=0)
    count = 0
    try:
        for key, fields in samples:
            sink.write({"__key__": key, **fields})
            count += 1
    finally:
        shards = sink.shard
        sink.close()
    if count == 0:
        raise ValueError(f"no samples to write into {split_dir}")
    (split_dir / "nshards.txt").write_text(f"{shards}\n")
    return shards


def export_classification(out_dir: str | Path, data: str | Path | Sequence[str] | LabeledImages, *,
                          classnames: ListSpec | None = None, templates: ListSpec = "openai_imagenet",
                          language: str | None = None, data_format: str = "auto", split: str = "test") -> Path:
    """Write the zero-shot classification set `data` (any `classification_data` layout, with the `classnames`
    / `templates` / `language` that `sfclip eval --task zeroshot_classification` would be given) as the
    CLIP_benchmark folder `out_dir` (replaced if it exists); returns `out_dir`."""
    names = load_classnames(classnames, language) if classnames is not None else None
    dataset = data if isinstance(data, LabeledImages) else classification_dataset(data, names, data_format)
    names = names if names is not None else dataset.classnames
    if len(names) != len(dataset.classnames):
        raise ValueError(f"{len(names)} class names for a dataset with {len(dataset.classnames)} classes")
    prompts = load_templates(templates, language)
    for t in prompts:
        # CLIP_benchmark fills a template with str.format(c=name); sfclip with a plain replace of {c}
        if "{" in t.replace("{c}", "") or "}" in t.replace("{c}", ""):
            raise ValueError(f"template {t!r} has braces besides {{c}}: CLIP_benchmark's str.format would "
                             "read them differently")

    def samples():
        for i, (source, label) in enumerate(dataset.items):
            ext, data = _image_entry(source)
            yield f"s{i:07d}", {ext: data, "cls": str(label).encode()}

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        _write_lines(tmp / "classnames.txt", [_line(n, "class name") for n in names])
        _write_lines(tmp / "zeroshot_classification_templates.txt", [_line(t, "template") for t in prompts])
        _write_shards(tmp / split, samples())
    return out


def export_retrieval(out_dir: str | Path, data: str | Path | Sequence[str] | CaptionedImages, *,
                     data_format: str = "auto", split: str | None = "test", language: str | None = None,
                     image_root: str | Path | None = None, out_split: str = "test") -> Path:
    """Write the retrieval set `data` (any `retrieval_data` layout, read with the arguments `sfclip eval --task
    retrieval` would be given) as the CLIP_benchmark folder `out_dir` (replaced if it exists); images without
    a caption are left out, as sfclip's evaluator leaves them out. Returns `out_dir`."""
    dataset = data if isinstance(data, CaptionedImages) else retrieval_dataset(
        data, data_format, split=split, language=language, image_root=image_root)

    def samples():
        for i, (source, captions) in enumerate(zip(dataset.sources, dataset.captions)):
            ext, data = _image_entry(source)
            text = "\n".join(_line(c, "caption") for c in captions)
            yield f"s{i:07d}", {ext: data, "txt": text.encode("utf-8")}

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        _write_lines(tmp / "dataset_type.txt", ["retrieval"])
        _write_shards(tmp / out_split, samples())
    return out


def export_scene_sets(eval_sets: Mapping[str, Path], out_root: str | Path, language: str = "en") -> dict[str, Path]:
    """The scenes' classification and retrieval sets (`write_eval_sets`' return value) as
    `out_root/wds_scenes_classification` and `out_root/wds_scenes_retrieval`, with the class names and
    templates of `classification/classnames.json` in `language`; returns CLIP_benchmark name -> folder."""
    out_root = Path(out_root)
    names = Path(eval_sets["classification"]).parent / "classnames.json"
    cls, ret = SCENE_SETS["classification"], SCENE_SETS["retrieval"]
    return {
        f"wds/{cls}": export_classification(out_root / f"{PREFIX}{cls}", eval_sets["classification"],
                                            classnames=names, templates=names, language=language),
        f"wds/{ret}": export_retrieval(out_root / f"{PREFIX}{ret}", eval_sets["retrieval"]),
    }


def dataset_name(folder: str | Path) -> str:
    """CLIP_benchmark's name of the set in `folder`: `wds/<name>` for `.../wds_<name>`."""
    name = Path(folder).resolve().name
    return f"wds/{name[len(PREFIX):] if name.startswith(PREFIX) else name}"


def is_wds_set(path: str | Path, split: str = "test") -> bool:
    """Whether `path` is a CLIP_benchmark `wds/` folder holding `split`."""
    return (Path(path) / split / "nshards.txt").is_file()


@dataclass(frozen=True)
class WdsSet:
    """A CLIP_benchmark folder as `sfclip eval` arguments."""

    name: str  # wds/<name>
    task: str  # zeroshot_classification | retrieval
    shards: list[str]
    classnames: Path | None
    templates: Path | None


def read_wds(folder: str | Path, split: str = "test") -> WdsSet:
    """The shards, class names and templates of the CLIP_benchmark folder `folder` (its `split`)."""
    folder = Path(folder)
    try:
        count = int((folder / split / "nshards.txt").read_text().strip())
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder} is not a CLIP_benchmark wds folder with a {split!r} split "
                         f"({folder / split / 'nshards.txt'}: {e})") from None
    kind = (folder / "dataset_type.txt").read_text().strip().lower() if (folder / "dataset_type.txt").is_file() \
        else "classification"
    if kind not in ("classification", "retrieval"):
        raise ValueError(f"{folder}: dataset_type {kind!r} is not one sfclip evaluates (classification, retrieval)")
    names, templates = folder / "classnames.txt", folder / "zeroshot_classification_templates.txt"
    return WdsSet(name=dataset_name(folder), task="retrieval" if kind == "retrieval" else "zeroshot_classification",
                  shards=[str(folder / split / f"{i}.tar") for i in range(count)],
                  classnames=names if names.is_file() else None,
                  templates=templates if templates.is_file() else None)
