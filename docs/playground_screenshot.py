"""Make docs/playground.png: the playground on the shipped model, with the README example's image and audio and a
caption that contradicts them ("it's a three"), as a person would use it, in Debian's headless Chromium.

    .venv/bin/python docs/playground_screenshot.py
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.test_docs_page import CHROMIUM, FLAGS  # noqa: E402
from tests.server import running_server  # noqa: E402

ASSETS = ROOT / "bench" / "assets"
OUT = ROOT / "docs" / "playground.png"


def main() -> None:
    with running_server(ROOT / "models", max_batch_size=8) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1180, "height": 900})
        page.goto(f"{server.url}/")
        expect(page.locator("#model option")).to_have_count(1)
        page.set_input_files("#image-file", ASSETS / "digit.png")
        page.fill("#text", "it's a three")
        page.set_input_files("#audio-file", ASSETS / "digit.wav")
        page.click("#predict")
        expect(page.locator("#attributions rect")).to_have_count(9)
        png = page.screenshot(full_page=True)
        browser.close()
    # A 64-colour palette keeps the flat UI legible at a fraction of the bytes.
    Image.open(io.BytesIO(png)).convert("RGB").quantize(64).save(OUT, optimize=True)
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
