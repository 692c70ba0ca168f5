"""Nearest neighbours over an embedding folder: exact search with numpy, or a FAISS index when it is large.

Both backends rank by inner product of L2-normalized vectors (cosine similarity) and are exact: numpy
streams the fp16 chunks from disk (memory-mapped) and keeps a running top k, so it needs no more memory
than one chunk; FAISS (`pip install 'sfclip[faiss]'`) loads every vector into an `IndexFlatIP`, whose
SIMD, multi-threaded scan is much faster once a collection has hundreds of thousands of rows. `auto` picks
FAISS from `FAISS_MIN_ROWS` rows when it is installed, and says which it chose (`Index.backend_note`).
Results agree between the two (same rows, scores equal to float32 rounding).
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

from .embed import PROGRESS, chunk_names, read_meta, read_progress

__all__ = ["Index", "BACKENDS", "FAISS_MIN_ROWS", "faiss_available", "top_k"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "faiss")
# Below this many rows a numpy scan answers in milliseconds and loads nothing; above, FAISS pays off.
FAISS_MIN_ROWS = 100_000


def _import_faiss():
    # faiss's loader logs at INFO every instruction set it tries and fails to load (AVX512, AVX2, ...).
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def faiss_available() -> bool:
    try:
        _import_faiss()
    except ImportError:
        return False
    return True


def top_k(scores: np.ndarray, k: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(Q, N) scores -> the k best (scores, row ids + offset) per query, best first; ties by lower row id."""
    q, n = scores.shape
    k = min(k, n)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # (Q,) the k-th best score
    out_s, out_i = np.empty((q, k), scores.dtype), np.empty((q, k), np.int64)
    for r in range(q):
        # Everything tied with the k-th best is a candidate, so that ties resolve by row id, not by chance.
        cand = np.flatnonzero(scores[r] >= kth[r])
        best = cand[np.lexsort((cand, -scores[r, cand]))[:k]]
        out_i[r], out_s[r] = best, scores[r, best]
    return out_s, out_i + offset


class Index:
    """A read-only view of an embedding folder: `search(queries, k)`, `row(i)`, `vector(i)`.

    Only complete chunks are read (a folder still being written, or interrupted, serves what it has).
    """

    def __init__(self, folder: str | Path, backend: str = "auto", faiss_min_rows: int = FAISS_MIN_ROWS) -> None:
        self.folder = Path(folder)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no embedding folder {self.folder}: create it with `sfclip embed CHECKPOINT "
                                    f"SOURCE --out {self.folder}`")
        self.meta = read_meta(self.folder)
        self.progress = read_progress(self.folder)
        self.chunk_rows: list[int] = []
        for i in range(int(self.progress["chunks"])):
            emb = self._chunk(i)
            self.chunk_rows.append(emb.shape[0])
        self.starts = np.concatenate([[0], np.cumsum(self.chunk_rows)]).astype(np.int64)
        self.size = int(self.starts[-1])
        if self.size == 0:
            raise ValueError(f"{self.folder} holds no embeddings yet ({PROGRESS}: {self.progress['rows']} rows)")
        self.dim = int(self.meta["embed_dim"])
        self.kind = self.meta.get("kind", "image")
        wanted = backend
        if backend == "auto":
            wanted = "faiss" if self.size >= faiss_min_rows and faiss_available() else "numpy"
        if wanted == "faiss" and not faiss_available():
            raise ImportError("backend 'faiss' needs faiss-cpu: pip install 'sfclip[faiss]'")
        self.backend = wanted
        self._faiss = None
        self.backend_note = self._note(backend, faiss_min_rows)
        if self.backend == "faiss":
            self._faiss = self._build_faiss()

    def _note(self, asked: str, faiss_min_rows: int) -> str:
        rows = f"{self.size:,} {self.kind}{'s' if self.size != 1 else ''}"
        if self.backend == "faiss":
            why = "asked for" if asked == "faiss" else f"{self.size:,} rows >= {faiss_min_rows:,}"
            return f"exact search with a FAISS IndexFlatIP over {rows} ({why})"
        if asked == "numpy":
            why = "asked for"
        elif self.size >= faiss_min_rows:
            why = f"{self.size:,} rows; install sfclip[faiss] for a faster search"
        else:
            why = f"under {faiss_min_rows:,} rows; FAISS is used from there when installed"
        return f"exact search with numpy over {rows} ({why})"

    def _chunk(self, i: int) -> np.ndarray:
        path = self.folder / chunk_names(i)[0]
        try:
            emb = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} cannot be read ({exc}); embed the collection again") from None
        if emb.ndim != 2:
            raise ValueError(f"{path} holds a {emb.ndim}-d array, expected (rows, embed_dim)")
        return emb

    def _build_faiss(self):
        faiss = _import_faiss()
        index = faiss.IndexFlatIP(self.dim)
        for i in range(len(self.chunk_rows)):
            index.add(np.ascontiguousarray(self._chunk(i), dtype=np.float32))
        return index

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(Q, E) normalized queries -> (scores (Q, k'), row ids (Q, k')), best first, k' = min(k, size)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, E)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have width {queries.shape[1]}, the index {self.dim} (another checkpoint?)")
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        k = min(k, self.size)
        if self._faiss is not None:
            scores, ids = self._faiss.search(queries, k)
            return scores, ids.astype(np.int64)
        best_s = np.full((queries.shape[0], 0), -np.inf, np.float32)
        best_i = np.zeros((queries.shape[0], 0), np.int64)
        for i, start in enumerate(self.starts[:-1]):
            scores = queries @ np.asarray(self._chunk(i), dtype=np.float32).T  # (Q, n)
            s, ids = top_k(scores, k, int(start))
            merged_s, merged_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, ids], 1)
            s, pos = top_k(merged_s, k)
            best_s, best_i = s, np.take_along_axis(merged_i, pos, axis=1)
        return best_s, best_i

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.size:
            raise IndexError(f"row {i} is outside the index (0..{self.size - 1})")
        chunk = int(np.searchsorted(self.starts, i, side="right") - 1)
        return chunk, i - int(self.starts[chunk])

    def vector(self, i: int) -> np.ndarray:
        """The stored (E,) embedding of row `i`, as float32."""
        chunk, j = self._locate(i)
        return np.asarray(self._chunk(chunk)[j], dtype=np.float32)

    def row(self, i: int) -> dict:
        """What the index stores about row `i`: key, caption, and path or shard + member."""
        chunk, j = self._locate(i)
        return dict(_rows(self.folder / chunk_names(chunk)[1])[j])


@lru_cache(maxsize=8)
def _rows(path: Path) -> tuple[dict, ...]:
    with open(path, encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh if line.strip())
