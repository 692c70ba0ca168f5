"""The page in a real browser (headless Debian chromium via Selenium): search, zero-shot, heat map, similar
images, and the messages bad inputs get. Skipped, with the reason, where no chromium/chromedriver exists."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the app extra (fastapi, uvicorn, python-multipart) is not installed")
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[test])")

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 30


def wait_for(browser, condition, what: str):
    return WebDriverWait(browser, WAIT, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def text_of(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def message(browser, element_id: str) -> str:
    """The text of a message box once it is shown."""
    wait_for(browser, lambda d: d.find_element(By.ID, element_id).is_displayed(), f"#{element_id} shown")
    return text_of(browser, element_id)


def loaded_images(browser, selector: str) -> list[int]:
    """naturalWidth of each matching <img> (0 = not loaded or broken)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(i => i.complete ? i.naturalWidth : 0)",
        selector)


def type_into(browser, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.clear()
    if text:
        field.send_keys(text)


def open_page(browser, url: str) -> None:
    browser.get(url)
    wait_for(browser, lambda d: "checkpoint" in text_of(d, "info"), "the page shows its checkpoint")


def test_search_zeroshot_heatmap_similar(browser, server, explore_run):
    open_page(browser, server)
    assert str(explore_run) in text_of(browser, "info") and "22 images" in text_of(browser, "info")

    # Text -> images, with thumbnails.
    type_into(browser, "query", "a red car")
    type_into(browser, "k", "6")
    browser.find_element(By.ID, "search-btn").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 6, "6 results")
    wait_for(browser, lambda d: all(w > 0 for w in loaded_images(d, "#results img")), "thumbnails loaded")
    assert "exact search with numpy over 22 images" in text_of(browser, "search-note")
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
    scores = [float(c.find_element(By.CLASS_NAME, "score").text.split()[-1]) for c in cards]
    assert scores == sorted(scores, reverse=True)
    assert "a photo of a" in cards[0].find_element(By.CLASS_NAME, "caption").text  # the shard's caption

    # Choose the third result as the image.
    chosen_row = cards[2].get_attribute("data-row")
    cards[2].click()
    wait_for(browser, lambda d: d.find_element(By.ID, "current").is_displayed(), "the chosen image")
    assert f"index row {chosen_row}" in text_of(browser, "current-name")

    # Zero-shot labels for typed classes, with the default template.
    type_into(browser, "classes", "red, green\nblue")
    browser.find_element(By.ID, "zeroshot-btn").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#zeroshot-results tr")) == 3, "3 labels")
    rows = browser.find_elements(By.CSS_SELECTOR, "#zeroshot-results tr")
    labels = [r.find_element(By.CLASS_NAME, "label").text for r in rows]
    probs = [float(r.find_element(By.CLASS_NAME, "prob").text.rstrip("%")) for r in rows]
    assert sorted(labels) == ["blue", "green", "red"] and probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(100.0, abs=0.3)

    # Heat map for a prompt: the overlay and its colour scale with the two ends labelled.
    type_into(browser, "prompt", "a red car")
    browser.find_element(By.ID, "heatmap-btn").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "heatmap").is_displayed(), "the heat map")
    wait_for(browser, lambda d: loaded_images(d, "#heatmap-img, #heatmap-scale")[0] == 320, "overlay loaded")
    assert loaded_images(browser, "#heatmap-scale")[0] == 256
    low, high = float(text_of(browser, "heatmap-min")), float(text_of(browser, "heatmap-max"))
    assert -1.0 <= low < high <= 1.0

    # Image -> similar images: the chosen image (or an identical copy) first, cosine 1.
    browser.find_element(By.ID, "similar-btn").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#similar-results .result")) == 6, "similar")
    first = browser.find_element(By.CSS_SELECTOR, "#similar-results .result")
    assert float(first.find_element(By.CLASS_NAME, "score").text.split()[-1]) > 0.999
    assert not any(browser.find_element(By.ID, m).is_displayed()
                   for m in ("search-msg", "image-msg", "zeroshot-msg", "heatmap-msg", "similar-msg"))


def test_bad_inputs_get_messages_and_the_page_keeps_working(browser, server, tmp_path):
    open_page(browser, server)
    # An empty query.
    type_into(browser, "query", "   ")
    browser.find_element(By.ID, "search-btn").click()
    assert "the query is empty" in message(browser, "search-msg")
    # No image chosen yet.
    browser.find_element(By.ID, "zeroshot-btn").click()
    assert "choose an image first" in message(browser, "zeroshot-msg")
    # A file that is not an image: the typed classes are checked first, then the file.
    notes = tmp_path / "notes.png"
    notes.write_text("just some text, named like a picture")
    browser.find_element(By.ID, "upload").send_keys(str(notes))
    type_into(browser, "classes", " , ")
    browser.find_element(By.ID, "zeroshot-btn").click()
    wait_for(browser, lambda d: "type at least one class name" in text_of(d, "zeroshot-msg"), "no-classes message")
    type_into(browser, "classes", "cat, dog")
    browser.find_element(By.ID, "zeroshot-btn").click()
    wait_for(browser, lambda d: "is not an image" in text_of(d, "zeroshot-msg"), "not-an-image message")
    # A heat map: an empty prompt, then the same bad upload.
    browser.find_element(By.ID, "heatmap-btn").click()
    assert "the prompt is empty" in message(browser, "heatmap-msg")
    type_into(browser, "prompt", "a cat")
    browser.find_element(By.ID, "heatmap-btn").click()
    wait_for(browser, lambda d: "is not an image" in text_of(d, "heatmap-msg"), "not-an-image message")
    # A file over the upload limit: refused on the page, before it is sent.
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (1024 * 1024))
    browser.find_element(By.ID, "upload").send_keys(str(huge))
    assert "the limit is 0.3 MB" in message(browser, "image-msg")
    # Nothing on the page is a traceback, and the server still answers.
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
    type_into(browser, "query", "a blue dog")
    browser.find_element(By.ID, "search-btn").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) > 0, "results")
    assert not browser.find_element(By.ID, "search-msg").is_displayed()


def test_missing_index_is_shown_on_the_page(browser, server_without_index, collection):
    open_page(browser, server_without_index)
    assert "index unavailable: no embedding folder" in message(browser, "index-msg")
    type_into(browser, "query", "a cat")
    browser.find_element(By.ID, "search-btn").click()
    assert "sfclip embed" in message(browser, "search-msg")
    # Zero-shot on an upload still works without an index.
    browser.find_element(By.ID, "upload").send_keys(str(collection["folder"] / collection["items"][0][0]))
    type_into(browser, "classes", "red, blue")
    browser.find_element(By.ID, "zeroshot-btn").click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#zeroshot-results tr")) == 2, "2 labels")
