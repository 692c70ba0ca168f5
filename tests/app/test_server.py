"""The HTTP layer of `sfclip serve`: JSON answers, error statuses with one-line messages, never a traceback."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid

import pytest

UPLOAD_LIMIT = 256 * 1024  # the test server's (conftest.py); checked against /api/info below

pytest.importorskip("fastapi", reason="the app extra (fastapi, uvicorn, python-multipart) is not installed")


def post(url: str, fields: dict, file: bytes | None = None, filename: str = "upload.png") -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in fields.items())
    if file is not None:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + file + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def test_the_api_answers(server, collection):
    info = get_json(f"{server}/api/info")
    assert info["index"]["rows"] == 22 and info["max_upload_bytes"] == UPLOAD_LIMIT
    status, out = post(f"{server}/api/search", {"query": "ein rotes Auto", "k": 4})
    assert status == 200 and len(out["results"]) == 4
    png = (collection["folder"] / collection["items"][3][0]).read_bytes()
    status, out = post(f"{server}/api/zeroshot", {"classes": "red, blue", "templates": ""}, png)
    assert status == 200 and {lab["label"] for lab in out["labels"]} == {"red", "blue"}
    status, out = post(f"{server}/api/heatmap", {"prompt": "blue", "row": "5"})
    assert status == 200 and out["overlay"].startswith("data:image/png;base64,")
    with urllib.request.urlopen(f"{server}/api/thumb/5", timeout=30) as resp:
        assert resp.headers["Content-Type"] == "image/jpeg" and resp.read(3) == b"\xff\xd8\xff"
    with urllib.request.urlopen(f"{server}/", timeout=30) as resp:
        assert b'id="search-form"' in resp.read()


@pytest.mark.parametrize("path, fields, file, status, message", [
    ("search", {"query": "  "}, None, 400, "the query is empty"),
    ("search", {"query": "cat", "k": "ten"}, None, 400, "k must be a whole number"),
    ("zeroshot", {"classes": "cat"}, b"GIF89a but not really", 400, "upload.png is not an image"),
    ("zeroshot", {"classes": "cat"}, None, 400, "choose an image first"),
    ("heatmap", {"prompt": "cat", "row": "99"}, None, 404, "row 99 is outside the index"),
    ("similar", {}, b"\0" * (UPLOAD_LIMIT + 100 * 1024), 413, "the limit is 0.25 MB"),
])
def test_bad_requests_get_a_message(server, path, fields, file, status, message):
    got, out = post(f"{server}/api/{path}", fields, file)
    assert got == status and message in out["error"] and "Traceback" not in out["error"]


def test_a_bug_is_one_line_and_the_server_keeps_serving(server, explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals\nTraceback (most recent call last): ...")

    monkeypatch.setattr(explorer, "search_text", broken)
    status, out = post(f"{server}/api/search", {"query": "cat"})
    assert status == 500 and out == {"error": "internal error (RuntimeError); the server log has the details"}
    monkeypatch.undo()
    assert post(f"{server}/api/search", {"query": "cat"})[0] == 200


def test_missing_index_is_reported(server_without_index):
    info = get_json(f"{server_without_index}/api/info")
    assert info["index"] is None and "no embedding folder" in info["index_error"]
    status, out = post(f"{server_without_index}/api/search", {"query": "cat"})
    assert status == 400 and "sfclip embed" in out["error"]


def test_serve_on_a_port_in_use_is_one_line(explore_run, capsys):
    from sfclip.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["serve", str(explore_run), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot listen on 127.0.0.1" in err[0] and "pick another --port" in err[0]
