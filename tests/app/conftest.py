"""Fixtures for `sfclip serve`: an embedding folder of the shared tiny collection (tests/conftest.py), a server
on a free 127.0.0.1 port (stopped at the end), and headless Debian chromium (skipped where it is absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sfclip.app import Explorer
from sfclip.index import embed_images, open_image_source

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
UPLOAD_LIMIT = 256 * 1024  # small, so that a test can send a file over it


@pytest.fixture(scope="session")
def app_index(explore_run, loaded, collection, tmp_path_factory) -> Path:
    """The collection's shards embedded (thumbnails then come from tar members; the cut shard's two too)."""
    model, _, transform = loaded
    out = tmp_path_factory.mktemp("app_index") / "emb"
    embed_images(model, transform, open_image_source(collection["shards"]), out, checkpoint=explore_run,
                 chunk_size=8, progress=False)
    return out


@pytest.fixture(scope="session")
def explorer(explore_run, loaded, app_index) -> Explorer:
    model, tokenizer, transform = loaded
    return Explorer(model, tokenizer, transform, app_index, checkpoint=explore_run)


def _start(explorer):
    pytest.importorskip("fastapi", reason="the app extra (fastapi, uvicorn, python-multipart) is not installed")
    from sfclip.app.server import create_app, start_in_thread

    return start_in_thread(create_app(explorer, UPLOAD_LIMIT))


@pytest.fixture(scope="session")
def server(explorer):
    """The base URL of a running server with an index."""
    url, stop = _start(explorer)
    yield url
    stop()


@pytest.fixture(scope="session")
def server_without_index(explore_run, loaded, tmp_path_factory):
    """A server started with an --index folder that does not exist."""
    model, tokenizer, transform = loaded
    missing = tmp_path_factory.mktemp("no_index") / "never_embedded"
    url, stop = _start(Explorer(model, tokenizer, transform, missing, checkpoint=explore_run))
    yield url
    stop()


def _browser_paths() -> tuple[str | None, str | None]:
    browser = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    return browser, shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser():
    """Headless chromium driven by Selenium through Debian's chromedriver (never a downloaded browser)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    binary, driver = _browser_paths()
    if binary is None or driver is None:
        pytest.skip("no headless browser here: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--lang=en-US"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()
