"""Search over embedding folders: numpy's streamed top k against a plain reference, and FAISS against numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfclip.index import Index, embed_images, encode_text_query, open_image_source
from sfclip.index.embed import FORMAT, META, PROGRESS, chunk_names
from sfclip.index.search import top_k


def write_folder(folder, vectors: np.ndarray, chunk: int) -> None:
    """An embedding folder in the on-disk format, from given vectors (fp16, several chunks)."""
    folder.mkdir()
    n = 0
    for i, start in enumerate(range(0, len(vectors), chunk)):
        part = vectors[start:start + chunk]
        np.save(folder / chunk_names(i)[0], part.astype(np.float16))
        (folder / chunk_names(i)[1]).write_text("".join(json.dumps({"key": str(start + j)}) + "\n"
                                                        for j in range(len(part))))
        n += 1
    (folder / META).write_text(json.dumps({"format": FORMAT, "kind": "image", "embed_dim": vectors.shape[1]}))
    (folder / PROGRESS).write_text(json.dumps({"chunks": n, "rows": len(vectors), "position": len(vectors),
                                               "skipped": {}, "complete": True}))


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_top_k_hand_built():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -1.0]], np.float32)
    s, i = top_k(scores, 3)
    assert i.tolist() == [[1, 3, 2]] and s[0].tolist() == pytest.approx([0.9, 0.9, 0.5])  # ties: lower row first
    s, i = top_k(np.array([[0.5, 0.7, 0.7, 0.7]], np.float32), 2)
    assert i.tolist() == [[1, 2]]  # a tie across the k-th place too
    s, i = top_k(scores, 10, offset=100)
    assert i.tolist() == [[101, 103, 102, 100, 104]]


def test_numpy_search_streams_chunks_exactly(tmp_path):
    vectors = random_unit(1000, 16, 0)
    write_folder(tmp_path / "emb", vectors, chunk=128)
    index = Index(tmp_path / "emb", backend="numpy")
    queries = random_unit(5, 16, 1)
    scores, ids = index.search(queries, 7)
    stored = vectors.astype(np.float16).astype(np.float32)
    full = queries @ stored.T  # (5, 1000): the plain reference, every row at once
    ref = np.argsort(-full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(full, ref, axis=1), rtol=1e-6, atol=1e-6)
    assert index.size == 1000 and index.row(300) == {"key": "300"}
    np.testing.assert_array_equal(index.vector(300), stored[300])
    with pytest.raises(IndexError):
        index.row(1000)


def test_faiss_and_numpy_agree_and_auto_says_which(tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu (sfclip[faiss]) is not installed")
    vectors = random_unit(3000, 32, 2)
    write_folder(tmp_path / "emb", vectors, chunk=512)
    queries = random_unit(20, 32, 3)
    exact = Index(tmp_path / "emb", backend="numpy")
    fast = Index(tmp_path / "emb", backend="faiss")
    s_np, i_np = exact.search(queries, 10)
    s_fa, i_fa = fast.search(queries, 10)
    np.testing.assert_array_equal(i_np, i_fa)
    np.testing.assert_allclose(s_np, s_fa, atol=1e-5)
    big = Index(tmp_path / "emb", faiss_min_rows=1000)
    small = Index(tmp_path / "emb", faiss_min_rows=10_000)
    assert big.backend == "faiss" and "FAISS IndexFlatIP over 3,000 images (3,000 rows >= 1,000)" in big.backend_note
    assert small.backend == "numpy" and "numpy over 3,000 images" in small.backend_note


def test_faiss_and_numpy_agree_on_a_real_collection(loaded, collection, tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu (sfclip[faiss]) is not installed")
    model, tokenizer, transform = loaded
    embed_images(model, transform, open_image_source(str(collection["folder"])), tmp_path / "emb", chunk_size=8,
                 batch_size=4, progress=False)
    queries = np.concatenate([encode_text_query(model, tokenizer, q) for q in ("a red cat", "a blue car", "tree")])
    s_np, i_np = Index(tmp_path / "emb", backend="numpy").search(queries, 20)
    s_fa, i_fa = Index(tmp_path / "emb", backend="faiss").search(queries, 20)
    np.testing.assert_allclose(s_np, s_fa, atol=1e-5)
    # Same ranking, up to the order of rows whose scores tie to float32 rounding.
    for q in range(len(queries)):
        assert [set(i_np[q][np.isclose(s_np[q], v, atol=1e-5)]) for v in s_np[q]] == \
               [set(i_fa[q][np.isclose(s_fa[q], v, atol=1e-5)]) for v in s_np[q]]


def test_index_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="sfclip embed"):
        Index(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no embeddings in"):
        Index(tmp_path / "empty")
    write_folder(tmp_path / "emb", random_unit(10, 8, 0), chunk=4)
    with pytest.raises(ValueError, match="width 5"):
        Index(tmp_path / "emb").search(np.ones((1, 5), np.float32), 3)
