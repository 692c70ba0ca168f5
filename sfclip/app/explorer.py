"""What the web page asks of a checkpoint, without any web code: search, zero-shot labels, heat maps.

`Explorer(model, tokenizer, transform, index_dir)` answers with plain dicts (JSON-ready). A bad input
raises `ValueError` (or `LookupError` for a row that does not exist) with a message meant for the person
at the page; the server shows it. A missing or unreadable index is not an error at start: the explorer
serves everything else and answers searches with the reason (`index_error`).
"""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..index.queries import decode_upload, encode_image_query, encode_text_query
from ..index.search import Index
from ..index.sources import read_row_image
from .heatmap import colour_bar, overlay

__all__ = ["Explorer", "clean_prompt", "parse_classes", "parse_templates", "DEFAULT_TEMPLATE", "MAX_CLASSES", "MAX_K"]

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of a {c}."
MAX_CLASSES = 200
MAX_TEMPLATES = 100
MAX_K = 100
MAX_QUERY_CHARS = 1000
THUMB_SIZE = 192


def clean_prompt(text: str, what: str = "prompt") -> str:
    """A typed query or prompt, stripped; empty or overlong ones are refused with a message."""
    text = (text or "").strip()
    if not text:
        example = "a red car"
        raise ValueError(f"the {what} is empty: type some words, e.g. '{example}'")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"the {what} has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
    return text


def parse_classes(text: str) -> list[str]:
    """Class names typed one a line or separated by commas; blanks and repeats dropped, order kept."""
    names = [n.strip() for n in re.split(r"[,\n]", text or "")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise ValueError("type at least one class name (one a line, or separated by commas)")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{len(names)} class names; the page takes at most {MAX_CLASSES}")
    return names


def parse_templates(text: str) -> list[str]:
    """Prompt templates one a line, each with `{c}` where the class name goes; none -> the default."""
    from ..eval.prompts import load_templates

    lines = [t.strip() for t in (text or "").splitlines() if t.strip()]
    if len(lines) > MAX_TEMPLATES:
        raise ValueError(f"{len(lines)} templates; the page takes at most {MAX_TEMPLATES}")
    return load_templates(lines or [DEFAULT_TEMPLATE])


def _png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Explorer:
    """A loaded checkpoint (and optionally an embedding folder) answering the page's questions."""

    def __init__(self, model, tokenizer, transform, index_dir: str | Path | None = None,
                 device: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> None:
        self.model, self.tokenizer, self.transform = model.eval(), tokenizer, transform
        self.device = torch.device(device)
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.lock = threading.Lock()  # one model call at a time: the CPU is shared anyway
        self.index: Index | None = None
        self.index_error: str | None = None
        if index_dir is None:
            self.index_error = "no index: start the server with --index DIR (a folder from `sfclip embed`)"
        else:
            try:
                self.index = Index(index_dir)
                if self.index.dim != model.cfg.embed_dim:
                    raise ValueError(f"the index {index_dir} holds {self.index.dim}-d embeddings, the model makes "
                                     f"{model.cfg.embed_dim}-d ones: embed the collection with this checkpoint")
            except (OSError, ValueError, ImportError) as exc:
                self.index = None
                self.index_error = f"index unavailable: {exc}"
                log.warning("%s", self.index_error)
        self._classifiers: OrderedDict = OrderedDict()
        self._thumbs: OrderedDict = OrderedDict()

    # -- what the page shows on load ----------------------------------------------------------------
    def info(self) -> dict:
        index = None
        if self.index is not None:
            index = {"folder": str(self.index.folder), "rows": self.index.size, "kind": self.index.kind,
                     "backend": self.index.backend_note, "source": self.index.meta.get("source")}
        return {"checkpoint": self.checkpoint, "model": getattr(self.model.cfg, "name", None),
                "image_size": getattr(self.transform, "image_size", None), "index": index,
                "index_error": self.index_error, "default_template": DEFAULT_TEMPLATE}

    # -- images -------------------------------------------------------------------------------------
    def _need_index(self) -> Index:
        if self.index is None:
            raise ValueError(self.index_error or "no index")
        return self.index

    def row_image(self, row: int) -> Image.Image:
        index = self._need_index()
        try:
            meta = index.row(row)
        except IndexError as exc:
            raise LookupError(str(exc)) from None
        try:
            data = read_row_image(meta)
        except Exception as exc:  # noqa: BLE001 - a file moved, a shard rewritten or broken: say which
            raise ValueError(f"the image of row {row} ({meta.get('key')}) cannot be read: "
                             f"{type(exc).__name__}: {exc}") from None
        return decode_upload(data, f"the image of row {row} ({meta.get('key')})")

    def image(self, upload: bytes | None, row: int | None, name: str = "the uploaded file") -> Image.Image:
        """The image a request is about: an upload, or a row of the index."""
        if upload is not None:
            return decode_upload(upload, name)
        if row is not None:
            return self.row_image(row)
        raise ValueError("choose an image first: upload one, or pick a search result")

    def thumbnail(self, row: int) -> bytes:
        """A JPEG of the row's image, at most THUMB_SIZE on its longer side (cached)."""
        if row in self._thumbs:
            self._thumbs.move_to_end(row)
            return self._thumbs[row]
        img = self.row_image(row)
        img.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=88)
        self._thumbs[row] = buf.getvalue()
        if len(self._thumbs) > 2048:
            self._thumbs.popitem(last=False)
        return self._thumbs[row]

    # -- search -------------------------------------------------------------------------------------
    def _results(self, query: np.ndarray, k: int) -> list[dict]:
        index = self._need_index()
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        scores, ids = index.search(query, k)
        out = []
        for rank, (score, i) in enumerate(zip(scores[0], ids[0]), 1):
            row = index.row(int(i))
            out.append({"rank": rank, "row": int(i), "score": round(float(score), 4), "key": row.get("key"),
                        "caption": row.get("caption", ""), "image": index.kind == "image"})
        return out

    def search_text(self, query: str, k: int = 12) -> dict:
        query = clean_prompt(query, "query")
        index = self._need_index()
        with self.lock:
            q = encode_text_query(self.model, self.tokenizer, query, self.device)
        return {"query": query, "backend": index.backend_note, "results": self._results(q, k)}

    def search_image(self, image: Image.Image, k: int = 12) -> dict:
        index = self._need_index()
        with self.lock:
            q = encode_image_query(self.model, self.transform, image, self.device)
        return {"backend": index.backend_note, "results": self._results(q, k)}

    # -- zero-shot labels ---------------------------------------------------------------------------
    def _classifier(self, classes: tuple[str, ...], templates: tuple[str, ...]) -> torch.Tensor:
        from ..eval.inference import evaluating
        from ..eval.prompts import text_classifier

        key = (classes, templates)
        if key not in self._classifiers:
            with evaluating(self.model):
                self._classifiers[key] = text_classifier(self.model, self.tokenizer, list(classes), list(templates),
                                                         self.device, progress=False)  # (C, E)
            if len(self._classifiers) > 32:
                self._classifiers.popitem(last=False)
        return self._classifiers[key]

    def zeroshot(self, image: Image.Image, classes_text: str, templates_text: str = "") -> dict:
        """Labels for `image` among the typed classes: CLIP's softmax over the model's scaled cosines."""
        classes, templates = parse_classes(classes_text), parse_templates(templates_text)
        with self.lock:
            weights = self._classifier(tuple(classes), tuple(templates))  # (C, E)
            img = torch.from_numpy(encode_image_query(self.model, self.transform, image, self.device))  # (1, E)
            cos = (img.to(weights) @ weights.T)[0].float().cpu()  # (C,)
            scale = float(self.model.logit_scale.detach().exp().cpu())
        probs = torch.softmax(scale * cos, dim=0)
        order = torch.argsort(probs, descending=True).tolist()
        labels = [{"label": classes[i], "prob": round(float(probs[i]), 4), "cosine": round(float(cos[i]), 4)}
                  for i in order]
        return {"labels": labels, "templates": templates, "logit_scale": round(scale, 3)}

    # -- heat maps ----------------------------------------------------------------------------------
    def heatmap(self, image: Image.Image, prompt: str, size: int = 320, readout: str = "plain") -> dict:
        """Cosine similarity of each patch embedding (`encode_patches` with `readout`: plain, maskclip or
        clearclip) with the prompt, over the image."""
        from sfclip.models.vit import READOUTS

        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        prompt = clean_prompt(prompt)
        with self.lock, torch.inference_mode():
            text = torch.from_numpy(encode_text_query(self.model, self.tokenizer, prompt, self.device))  # (1, E)
            x = self.transform(image)[None].to(self.device)  # (1, 3, S, S)
            patches = self.model.encode_patches(x, normalize=True, readout=readout)[0]  # (h, w, E)
            sim = (patches.float() @ text[0].to(patches.device).float()).cpu().numpy()  # (h, w)
        picture, lo, hi = overlay(image, sim, size)
        return {"prompt": prompt, "readout": readout, "overlay": _png_data_url(picture),
                "scale": _png_data_url(colour_bar()),
                "min": round(lo, 4), "max": round(hi, 4), "grid": list(sim.shape)}
