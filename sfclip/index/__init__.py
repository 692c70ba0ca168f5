"""Embedding folders: embed a collection with a checkpoint (`embed`), then search it (`search`).

    from sfclip.index import Index, embed_images, open_image_source
    model, tokenizer, transform = sfclip.load("runs/my_run")
    embed_images(model, transform, open_image_source("photos/"), "photos.emb")
    scores, rows = Index("photos.emb").search(encode_text_query(model, tokenizer, "a red car"), k=10)

The command line is `sfclip embed` / `sfclip search` (`commands.py`); `sfclip serve` (`sfclip.app`) shows
the same in a browser.
"""

from .embed import EmbedError, embed_images, embed_texts, read_meta, read_progress
from .queries import decode_upload, encode_image_query, encode_text_query
from .search import FAISS_MIN_ROWS, Index, faiss_available
from .sources import ImageSource, TextSource, open_image_source, open_text_source, read_row_image

__all__ = ["embed_images", "embed_texts", "EmbedError", "read_meta", "read_progress", "Index", "FAISS_MIN_ROWS",
           "faiss_available", "ImageSource", "TextSource", "open_image_source", "open_text_source",
           "read_row_image", "encode_text_query", "encode_image_query", "decode_upload"]
