"""Queries into the joint space: a text or an image -> one normalized embedding (float32 numpy)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["encode_text_query", "encode_image_query", "decode_upload", "MAX_PIXELS"]

# An upload that decodes to more pixels than this is refused before decoding (a decompression bomb, or a
# photo far larger than any model input): 50 megapixels.
MAX_PIXELS = 50_000_000


def encode_text_query(model, tokenizer, text: str, device: str | torch.device = "cpu") -> np.ndarray:
    """(1, E) embedding of `text`, tokenized as the checkpoint's tokenizer does (any language it covers)."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the query is empty: type some words")
    tok = tokenizer([text])
    with torch.inference_mode():
        emb = model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device), normalize=True)
    return emb.float().cpu().numpy()  # (1, E)


def encode_image_query(model, transform, image: Image.Image, device: str | torch.device = "cpu") -> np.ndarray:
    """(1, E) embedding of a decoded image, preprocessed with the checkpoint's eval transform."""
    with torch.inference_mode():
        emb = model.encode_image(transform(image)[None].to(device), normalize=True)  # (1, E)
    return emb.float().cpu().numpy()


def decode_upload(data: bytes, name: str = "the file") -> Image.Image:
    """Bytes someone handed us -> RGB image, or a ValueError that says what is wrong with them."""
    import io

    from PIL import UnidentifiedImageError

    from ..data.transforms import decode_image

    if not data:
        raise ValueError(f"{name} is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except UnidentifiedImageError:
        raise ValueError(f"{name} is not an image (PNG, JPEG, WebP, GIF, BMP, TIFF ...)") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for broken headers
        raise ValueError(f"{name} is not a readable image ({type(exc).__name__})") from None
    if width * height > MAX_PIXELS:
        raise ValueError(f"{name} is {width} x {height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels")
    try:
        return decode_image(data)
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt image body
        raise ValueError(f"{name} is a damaged image ({type(exc).__name__}: {str(exc)[:80]})") from None
