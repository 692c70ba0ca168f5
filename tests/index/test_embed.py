"""`sfclip embed`: every source kind, skips counted as in training, chunks, resume after a kill, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sfclip.cli import main
from sfclip.index import EmbedError, embed_images, embed_texts, open_image_source, open_text_source, read_meta
from sfclip.index.embed import chunk_names, read_progress


def stored(folder) -> tuple[np.ndarray, list[dict]]:
    """Every chunk of an embedding folder, concatenated in order."""
    chunks = read_progress(folder)["chunks"]
    emb = [np.load(folder / chunk_names(i)[0]) for i in range(chunks)]
    rows = [json.loads(line) for i in range(chunks) for line in (folder / chunk_names(i)[1]).read_text().splitlines()]
    return np.concatenate(emb), rows


def reference_image_embeddings(model, transform, paths) -> np.ndarray:
    with torch.inference_mode():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])  # (N, 3, S, S)
        return model.encode_image(x, normalize=True).numpy()  # (N, E)


@pytest.mark.parametrize("kind", ["folder", "csv", "shards"])
def test_embed_each_source_counts_skips_like_training(kind, loaded, collection, tmp_path):
    model, _, transform = loaded
    source = open_image_source(str(collection[kind]))
    progress = embed_images(model, transform, source, tmp_path / "emb", batch_size=4, chunk_size=8, progress=False)
    emb, rows = stored(tmp_path / "emb")
    names = [name for name, _ in collection["items"]]
    expected = {
        "folder": (names, {"bad_image": 1}),  # broken.png; notes.txt is no image file and is not an entry
        "csv": (names, {"missing_image": 1}),
        # the cut shard keeps its first two samples and is counted once
        "shards": (names + names[:2], {"bad_shard": 1}),
    }[kind]
    assert progress["complete"] and progress["rows"] == len(expected[0]) == len(rows) == emb.shape[0]
    assert {k: v for k, v in progress["skipped"].items() if v} == expected[1]
    assert progress["chunks"] == -(-len(rows) // 8)  # ceil: chunks of 8 rows
    assert emb.dtype == np.float16 and emb.shape[1] == model.cfg.embed_dim
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # Same rows, same order as the reader gives them, and the embeddings are the model's own.
    keys = [r["key"] for r in rows]
    if kind == "shards":
        assert keys == [f"s{i // 10}_{n[:-4]}" for i, n in enumerate(names)] + [f"s2_{n[:-4]}" for n in names[:2]]
        assert rows[0]["caption"] == collection["items"][0][1] and rows[0]["member"].endswith(".png")
    else:
        files = [os.path.basename(r["path"]) for r in rows]
        assert files == names
    ref = reference_image_embeddings(model, transform, [collection["folder"] / n for n in expected[0]])
    np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3)
    meta = read_meta(tmp_path / "emb")
    assert meta["kind"] == "image" and meta["embed_dim"] == model.cfg.embed_dim and meta["dtype"] == "float16"


def test_embed_texts_skips_empty_and_undecodable_captions(loaded, tmp_path):
    model, tokenizer, _ = loaded
    captions = tmp_path / "captions.txt"
    captions.write_bytes(b"a red cat\n\n   \na blue dog\nbad \xff bytes\na green tree\n")
    progress = embed_texts(model, tokenizer, open_text_source(str(captions)), tmp_path / "emb", batch_size=2,
                           chunk_size=2, progress=False)
    emb, rows = stored(tmp_path / "emb")
    assert [r["caption"] for r in rows] == ["a red cat", "a blue dog", "a green tree"]
    assert [r["key"] for r in rows] == ["0", "3", "5"]  # line numbers
    assert {k: v for k, v in progress["skipped"].items() if v} == {"empty_caption": 2, "bad_text": 1}
    tok = tokenizer(["a red cat", "a blue dog", "a green tree"])
    with torch.inference_mode():
        ref = model.encode_text(tok["input_ids"], tok["attention_mask"]).numpy()
    np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3)


def test_embed_resumes_after_a_kill(explore_run, loaded, collection, tmp_path):
    """SIGKILL right after the first chunk is recorded; a rerun finishes with exactly the rows of an
    uninterrupted run, even with a later chunk half-written when the kill came."""
    args = [sys.executable, "-m", "sfclip.cli", "embed", str(explore_run), str(collection["csv"]), "--out",
            str(tmp_path / "killed"), "--batch-size", "4", "--chunk-size", "4", "--no-progress"]
    env = {**os.environ, "SFCLIP_FAULT": "embed_after_chunk", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert read_progress(tmp_path / "killed")["chunks"] == 1 and not read_progress(tmp_path / "killed")["complete"]
    # A chunk the kill interrupted before it was recorded: it must be written again, not trusted.
    (tmp_path / "killed" / chunk_names(1)[0]).write_bytes(b"half a chunk")
    assert main(["embed", str(explore_run), str(collection["csv"]), "--out", str(tmp_path / "killed"),
                 "--batch-size", "4", "--chunk-size", "4", "--no-progress"]) == 0
    model, _, transform = loaded
    embed_images(model, transform, open_image_source(str(collection["csv"])), tmp_path / "whole", batch_size=4,
                 chunk_size=4, progress=False)
    (emb_a, rows_a), (emb_b, rows_b) = stored(tmp_path / "killed"), stored(tmp_path / "whole")
    assert rows_a == rows_b and len(rows_a) == len(collection["items"])
    np.testing.assert_array_equal(emb_a, emb_b)
    pa, pb = read_progress(tmp_path / "killed"), read_progress(tmp_path / "whole")
    assert pa["complete"] and (pa["rows"], pa["position"], pa["skipped"]) == (pb["rows"], pb["position"], pb["skipped"])


def test_embed_refuses_a_folder_of_another_request(loaded, collection, tmp_path):
    model, _, transform = loaded
    embed_images(model, transform, open_image_source(str(collection["csv"])), tmp_path / "emb", progress=False)
    with pytest.raises(EmbedError, match="another request.*source"):
        embed_images(model, transform, open_image_source(str(collection["folder"])), tmp_path / "emb", progress=False)
    # The same request again is complete already: nothing is rewritten.
    before = (tmp_path / "emb" / chunk_names(0)[0]).stat().st_mtime_ns
    assert embed_images(model, transform, open_image_source(str(collection["csv"])), tmp_path / "emb",
                        progress=False)["complete"]
    assert (tmp_path / "emb" / chunk_names(0)[0]).stat().st_mtime_ns == before


def test_cli_embed_then_search(explore_run, collection, tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["embed", str(explore_run), str(collection["folder"]), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"20 images embedded in {out}" in printed and "bad_image 1" in printed
    # Image -> images: the query image itself comes first, with cosine ~1.
    query = collection["folder"] / collection["items"][7][0]
    assert main(["search", str(out), "--image", str(query), "--k", "3", "--json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert len(results) == 3 and results[0]["key"] == collection["items"][7][0]
    assert results[0]["score"] > 0.999 and results[0]["score"] >= results[1]["score"] >= results[2]["score"]
    assert "exact search with numpy over 20 images" in captured.err
    # Text -> images, printed as a table of k lines.
    assert main(["search", str(out), "a red car", "--k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].split()[0] == "1"


@pytest.mark.parametrize("argv, message", [
    (["search", "{tmp}/nowhere", "a cat"], "no embeddings in"),
    (["search", "{emb}", "   "], "the query is empty"),
    (["search", "{emb}"], "give a text query or --image PATH"),
    (["search", "{emb}", "--image", "{tmp}/notes.txt"], "is not an image"),
    (["embed", "{run}", "{tmp}/none.csv", "--out", "{tmp}/x"], "no such csv/tsv file"),
])
def test_cli_bad_input_is_one_line(argv, message, explore_run, loaded, collection, tmp_path, capsys):
    model, _, transform = loaded
    embed_images(model, transform, open_image_source(str(collection["csv"])), tmp_path / "emb",
                 checkpoint=explore_run, progress=False)
    (tmp_path / "notes.txt").write_text("hello")
    argv = [a.format(tmp=tmp_path, emb=tmp_path / "emb", run=explore_run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
