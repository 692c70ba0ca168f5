"""`sfclip serve`: a FastAPI app with one small page over an `Explorer` (needs `pip install 'sfclip[app]'`).

Routes: `/` (the page, `static/index.html` + `app.js` + `style.css`, no external assets), `/api/info`,
`/api/search` (text), `/api/similar`, `/api/zeroshot`, `/api/heatmap` (an uploaded file or an index
row), `/api/thumb/{row}`. Every API answer is JSON; a failure is `{"error": message}` with status 400
(a bad input), 413 (an upload over the limit) or 500 (a bug: the traceback goes to the server log, never
to the page), and the server keeps serving.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .explorer import MAX_K, Explorer, clean_prompt, parse_classes, parse_templates

__all__ = ["create_app", "serve", "start_in_thread", "bind"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


class _Oversize(Exception):
    pass


def _int(value, name: str, default: int | None = None) -> int | None:
    if value is None or str(value).strip() == "":
        return default
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {str(value)[:40]!r}") from None


def create_app(explorer: Explorer, max_upload_bytes: int = 20 * 2**20) -> FastAPI:
    """The web app over a loaded explorer; `max_upload_bytes` bounds a request body."""
    app = FastAPI(title="sfclip", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    limit_mb = max_upload_bytes / 2**20

    def too_big(size: int) -> JSONResponse:
        return JSONResponse({"error": f"the upload is {size / 2**20:.1f} MB; the limit is {limit_mb:.3g} MB "
                                      "(sfclip serve --max-upload-mb)"}, status_code=413)

    @app.middleware("http")
    async def limit_uploads(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            return too_big(int(length))  # refused before the body is read
        return await call_next(request)

    async def answer(fn, *args) -> JSONResponse:
        try:
            return JSONResponse(await run_in_threadpool(fn, *args))
        except (ValueError, LookupError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=404 if isinstance(exc, LookupError) else 400)
        except Exception as exc:
            log.exception("%s failed", getattr(fn, "__name__", "request"))
            return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"},
                                status_code=500)

    async def read_form(request: Request) -> dict:
        """The form fields, and the upload's bytes under `file` (None when no file was sent)."""
        try:
            form = await request.form(max_files=1, max_fields=20)
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies raise several kinds
            raise ValueError(f"the request is not a form the page sends ({type(exc).__name__})") from None
        fields: dict = {"file": None, "filename": "the uploaded file"}
        for key, value in form.multi_items():
            if hasattr(value, "read"):  # an UploadFile
                data = await value.read(max_upload_bytes + 1)
                await value.close()
                if len(data) > max_upload_bytes:
                    raise _Oversize(len(data))
                if data or value.filename:
                    fields["file"], fields["filename"] = data, value.filename or "the uploaded file"
            else:
                fields[key] = value
        return fields

    async def form_or_error(request: Request):
        try:
            return await read_form(request), None
        except _Oversize as exc:
            return None, too_big(exc.args[0])
        except ValueError as exc:
            return None, JSONResponse({"error": str(exc)}, status_code=400)

    def image_of(f: dict):
        return explorer.image(f["file"], _int(f.get("row"), "row"), f["filename"])

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    async def info():
        return await answer(lambda: {**explorer.info(), "max_upload_bytes": max_upload_bytes, "max_k": MAX_K})

    @app.post("/api/search")
    async def search(request: Request):
        f, error = await form_or_error(request)
        if error:
            return error

        def run():
            return explorer.search_text(f.get("query", ""), _int(f.get("k"), "k", 12))

        return await answer(run)

    @app.post("/api/similar")
    async def similar(request: Request):
        f, error = await form_or_error(request)
        if error:
            return error

        def run():
            return explorer.search_image(image_of(f), _int(f.get("k"), "k", 12))

        return await answer(run)

    @app.post("/api/zeroshot")
    async def zeroshot(request: Request):
        f, error = await form_or_error(request)
        if error:
            return error

        def run():
            parse_classes(f.get("classes", ""))  # what was typed is checked before the image is decoded
            parse_templates(f.get("templates", ""))
            return explorer.zeroshot(image_of(f), f.get("classes", ""), f.get("templates", ""))

        return await answer(run)

    @app.post("/api/heatmap")
    async def heatmap(request: Request):
        f, error = await form_or_error(request)
        if error:
            return error

        def run():
            clean_prompt(f.get("prompt", ""))
            return explorer.heatmap(image_of(f), f.get("prompt", ""), readout=f.get("readout", "plain") or "plain")

        return await answer(run)

    @app.get("/api/thumb/{row}")
    async def thumb(row: str):
        try:
            data = await run_in_threadpool(explorer.thumbnail, _int(row, "row"))
        except (ValueError, LookupError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or an OSError that names the address (a port in use, a host not on this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server(app: FastAPI, log_level: str):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2))


def start_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0):
    """Serve `app` from a background thread (tests, scripts): returns (url, stop())."""
    sock = bind(host, port)
    server = _server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="sfclip-serve")
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.02)
    if not server.started:
        raise RuntimeError("the server did not start (see the log)")

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://{host}:{sock.getsockname()[1]}", stop


def serve(checkpoint: str | Path, index: str | Path | None = None, host: str = "127.0.0.1", port: int = 7860,
          device: str = "cpu", max_upload_mb: float = 20.0) -> None:
    """Load `checkpoint`, open `index` (a missing one is shown on the page), serve until Ctrl-C."""
    from ..checkpoint import load

    sock = bind(host, port)  # before the model loads: a port in use fails at once
    model, tokenizer, transform = load(checkpoint, device=device)
    explorer = Explorer(model, tokenizer, transform, index, device=device, checkpoint=checkpoint)
    app = create_app(explorer, int(max_upload_mb * 2**20))
    shown = f"[{host}]" if ":" in host else host
    print(f"sfclip serve: {checkpoint} at http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the page", host)
    _server(app, "info").run(sockets=[sock])
