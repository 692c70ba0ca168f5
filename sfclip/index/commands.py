"""The `sfclip embed`, `sfclip search` and `sfclip serve` subcommands: they parse and call, nothing more.

    sfclip embed CHECKPOINT SOURCE --out DIR [--text]   embed a folder, CSV or shards (or captions)
    sfclip search DIR "query" [--k 10]                  text -> nearest rows of DIR (or --image PATH)
    sfclip serve CHECKPOINT [--index DIR] [--port P]    explore a checkpoint in the browser

`add_commands(subparsers)` registers them on the main parser (`sfclip.cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_commands", "serve_command"]

DEFAULT_PORT = 7860


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def serve_command(checkpoint: str | Path, index: str | Path | None = None, port: int = DEFAULT_PORT) -> str:
    """The command line that opens `checkpoint` in the browser (what `sfclip demo` prints at its end)."""
    import shlex

    parts = ["sfclip", "serve", str(checkpoint)]
    if index is not None:
        parts += ["--index", str(index)]
    if port != DEFAULT_PORT:
        parts += ["--port", str(port)]
    return shlex.join(parts)


def cmd_embed(args) -> int:
    from ..checkpoint import load
    from .embed import embed_images, embed_texts
    from .sources import open_image_source, open_text_source

    # The source is opened (and checked) before the checkpoint loads.
    if args.text:
        source = open_text_source(args.source, caption_key=args.caption_key, separator=args.separator)
    else:
        source = open_image_source(args.source, args.type, img_key=args.img_key, caption_key=args.caption_key,
                                   separator=args.separator)
    model, tokenizer, transform = load(args.checkpoint, device=args.device)
    common = dict(checkpoint=args.checkpoint, batch_size=args.batch_size, device=args.device,
                  progress=not args.no_progress)
    if args.chunk_size:
        common["chunk_size"] = args.chunk_size
    if args.text:
        result = embed_texts(model, tokenizer, source, args.out, **common)
    else:
        result = embed_images(model, transform, source, args.out, workers=args.workers, **common)
    skipped = {k: v for k, v in result["skipped"].items() if v}
    what = "captions" if args.text else "images"
    print(f"{result['rows']} {what} embedded in {args.out} ({result['chunks']} chunks); skipped: "
          f"{', '.join(f'{k} {v}' for k, v in skipped.items()) or 'none'}")
    print(f"search it: sfclip search {args.out} \"a query\"")
    return 0


def cmd_search(args) -> int:
    from ..checkpoint import load
    from .embed import read_meta
    from .queries import decode_upload, encode_image_query, encode_text_query
    from .search import Index

    if (args.query is None) == (args.image is None):
        raise ValueError("give a text query or --image PATH (one of them)")
    if args.query is not None and not args.query.strip():
        raise ValueError("the query is empty: type some words")
    meta = read_meta(args.index)
    checkpoint = args.checkpoint or meta.get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{args.index} does not record its checkpoint; pass --checkpoint")
    image = None
    if args.image is not None:
        image = decode_upload(Path(args.image).read_bytes(), str(args.image))
    index = Index(args.index, backend=args.backend)
    print(index.backend_note, file=sys.stderr)
    model, tokenizer, transform = load(checkpoint, device=args.device)
    if image is not None:
        query = encode_image_query(model, transform, image, args.device)
    else:
        query = encode_text_query(model, tokenizer, args.query, args.device)
    scores, ids = index.search(query, args.k)
    results = [{"rank": r + 1, "score": round(float(s), 4), "row": int(i), **index.row(int(i))}
               for r, (s, i) in enumerate(zip(scores[0], ids[0]))]
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
        return 0
    for res in results:
        where = res.get("path") or (f"{res['shard']}:{res['member']}" if res.get("shard") else "")
        text = res.get("caption") or ""
        print(f"{res['rank']:>3}  {res['score']:+.4f}  {res['key']}  {where}  {text}".rstrip())
    return 0


def cmd_serve(args) -> int:
    try:
        from ..app.server import serve
    except ImportError as exc:
        print(f"sfclip serve: error: the web app needs the app extra ({exc.name or exc} is missing): "
              "pip install 'sfclip[app]'", file=sys.stderr)
        return 2
    serve(args.checkpoint, index=args.index, host=args.host, port=args.port, device=args.device,
          max_upload_mb=args.max_upload_mb)
    return 0


def add_commands(sub) -> None:
    """Register `embed`, `search` and `serve` on the main parser's subparsers."""
    e = sub.add_parser("embed", help="embed an image folder, CSV or shards (or a caption file) into a folder")
    e.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest checkpoint)")
    e.add_argument("source", help="an image folder, a .csv/.tsv, a shard spec (/data/{00000..00009}.tar), "
                   "or with --text a caption file (.txt one a line, or .csv/.tsv)")
    e.add_argument("--out", required=True, help="the embedding folder (created; an interrupted run resumes)")
    e.add_argument("--text", action="store_true", help="embed captions instead of images")
    e.add_argument("--type", default="auto", choices=["auto", "folder", "csv", "webdataset"],
                   help="what SOURCE is (auto: a folder, a .csv/.tsv, else shards)")
    e.add_argument("--img-key", dest="img_key", default="filepath", help="CSV image column")
    e.add_argument("--caption-key", dest="caption_key", default="caption", help="CSV caption column")
    e.add_argument("--separator", default="", help="CSV separator (default: tab for .tsv, comma otherwise)")
    e.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=64)
    e.add_argument("--chunk-size", dest="chunk_size", type=_positive_int, default=None,
                   help="rows per chunk file (default 4096 images, 16384 captions)")
    e.add_argument("--workers", type=_positive_int, default=2, help="image decoding threads")
    e.add_argument("--device", default="cpu")
    e.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_embed)

    s = sub.add_parser("search", help="search an embedding folder by text or by image")
    s.add_argument("index", help="an embedding folder written by `sfclip embed`")
    s.add_argument("query", nargs="?", help="text, in any language the checkpoint's tokenizer covers")
    s.add_argument("--image", help="search by this image instead of text")
    s.add_argument("--k", type=_positive_int, default=10, help="results (default 10)")
    s.add_argument("--checkpoint", help="the model for the query (default: the one that embedded the folder)")
    s.add_argument("--backend", default="auto", choices=["auto", "numpy", "faiss"],
                   help="auto: numpy below 100,000 rows, FAISS from there when installed")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument("--device", default="cpu")
    s.set_defaults(fn=cmd_search)

    v = sub.add_parser("serve", help="explore a checkpoint in the browser (needs sfclip[app])")
    v.add_argument("checkpoint", help="a checkpoint folder or a run folder (its latest checkpoint)")
    v.add_argument("--index", help="an embedding folder to search (from `sfclip embed`)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=_positive_int, default=DEFAULT_PORT)
    v.add_argument("--device", default="cpu")
    v.add_argument("--max-upload-mb", dest="max_upload_mb", type=_positive_float, default=20.0,
                   help="largest image upload accepted (default 20 MB)")
    v.set_defaults(fn=cmd_serve)
