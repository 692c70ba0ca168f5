"""Take the README's screenshot of `sfclip serve` with headless Debian chromium (as the page tests drive it).

    python docs/explore/screenshot.py CHECKPOINT INDEX_DIR docs/explore/serve.png \
        --query "a red pullover" --k 7 --classes "red, green, blue, yellow, white, pink, purple, orange" --prompt red

Runs the real app on 127.0.0.1 (a free port) in this process, types into the page, clicks, and saves the
whole page as a PNG. Needs `pip install -e '.[app]' selenium` and `apt-get install chromium chromium-driver`.
"""

from __future__ import annotations

import argparse
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import sfclip
from sfclip.app import Explorer
from sfclip.app.server import create_app, start_in_thread


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("index")
    p.add_argument("out")
    p.add_argument("--query", default="a red bag")
    p.add_argument("--pick", type=int, default=0, help="which search result to use as the image")
    p.add_argument("--classes", default="a bag, a dress, a sneaker, a coat")
    p.add_argument("--prompt", default="a bag")
    p.add_argument("--k", type=int, default=12)
    p.add_argument("--width", type=int, default=1280)
    args = p.parse_args()

    model, tokenizer, transform = sfclip.load(args.checkpoint)
    url, stop = start_in_thread(create_app(Explorer(model, tokenizer, transform, args.index,
                                                    checkpoint=args.checkpoint)))
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--window-size={args.width},1600"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    wait = WebDriverWait(drv, 60, poll_frequency=0.05)
    try:
        drv.get(url)
        wait.until(lambda d: "checkpoint" in d.find_element(By.ID, "info").text)
        for element_id, text in (("query", args.query), ("k", str(args.k)), ("classes", args.classes),
                                 ("prompt", args.prompt)):
            field = drv.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(text)
        drv.find_element(By.ID, "search-btn").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == args.k)
        drv.find_elements(By.CSS_SELECTOR, "#results .result")[args.pick].click()
        for button, done in (("zeroshot-btn", "#zeroshot-results tr"), ("heatmap-btn", "#heatmap:not([hidden])"),
                             ("similar-btn", "#similar-results .result")):
            drv.find_element(By.ID, button).click()
            wait.until(lambda d, done=done: d.find_elements(By.CSS_SELECTOR, done))
        # Every picture on the page loaded, then the window as tall as the page.
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete && (i.naturalWidth > 0 || !i.src))"))
        height = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(args.width, height + 200)  # the window includes space the page does not get
        drv.execute_script("window.scrollTo(0, 0)")
        drv.save_screenshot(args.out)
        print(f"wrote {args.out} ({args.width} x {height})")
    finally:
        drv.quit()
        stop()


if __name__ == "__main__":
    main()
