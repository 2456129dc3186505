"""/docs in a real headless Chromium, as a person uses it: pick an image and an audio file, type text, Execute."""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import soundfile as sf
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests import media
from tests.helpers import LABELS, png_bytes, wav_bytes
from tests.server import Server, running_server

ASSETS = Path(__file__).resolve().parents[2] / "bench/assets"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PREDICT = "#operations-predict-predict_default_v1_predict_post"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.needs_tool(str(CHROMIUM), apt="chromium"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def test_a_person_gets_probabilities_from_the_docs_page(server: Server, page: Page, tmp_path: Path) -> None:
    image, audio = tmp_path / "photo.png", tmp_path / "clip.wav"
    image.write_bytes(png_bytes())
    audio.write_bytes(wav_bytes())
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))

    page.goto(f"{server.url}/docs")
    operation = page.locator(PREDICT)
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator('tr[data-property-name="image"] input[type=file]').set_input_files(image)
    operation.locator('tr[data-property-name="text"] input[type=text]').fill("a small dog barking")
    operation.locator('tr[data-property-name="audio"] input[type=file]').set_input_files(audio)
    operation.get_by_role("button", name="Execute").click()

    live = operation.locator(".live-responses-table")
    expect(live.locator("tbody td.response-col_status")).to_have_text("200")
    body = json.loads(live.locator("tbody .response-col_description pre").first.inner_text())
    assert body["model"] == "tiny"
    assert body["modalities"] == ["image", "text", "audio"]  # both files and the text went through the form
    assert set(body["probabilities"]) == set(LABELS)
    assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-5)
    assert body["top"][0]["probability"] == max(body["probabilities"].values())
    # Swagger UI's script, styles and icon came from the service itself: no CDN, no validator.
    assert hosts == {urlsplit(server.url).netloc}


@pytest.mark.parametrize(
    "image_kind,audio_kind", [("avif", "webm-opus"), ("heic", "m4a-aac"), ("jxl", "mp4-h264-aac-video")]
)
def test_the_file_pickers_take_phone_and_browser_formats(
    server: Server, page: Page, tmp_path: Path, image_kind: str, audio_kind: str
) -> None:
    """What a phone or a browser recorder saves goes through the pickers: they filter no file type, and the
    service reads each type from its content."""
    image, audio = tmp_path / f"photo.{image_kind}", tmp_path / f"clip.{audio_kind.split('-')[0]}"
    image.write_bytes(media.IMAGES[image_kind](Image.open(ASSETS / "digit.png")))
    samples, rate = sf.read(ASSETS / "digit.wav", dtype="float32")
    audio.write_bytes(media.AUDIO[audio_kind](samples, rate))
    page.goto(f"{server.url}/docs")
    operation = page.locator(PREDICT)
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    for field, path in (("image", image), ("audio", audio)):
        picker = operation.locator(f'tr[data-property-name="{field}"] input[type=file]')
        assert picker.get_attribute("accept") in (None, "")  # no filter in the browser's file dialog
        picker.set_input_files(path)
    operation.locator('tr[data-property-name="text"] input[type=text]').fill("a seven, I think")
    operation.get_by_role("button", name="Execute").click()
    live = operation.locator(".live-responses-table")
    expect(live.locator("tbody td.response-col_status")).to_have_text("200")
    body = json.loads(live.locator("tbody .response-col_description pre").first.inner_text())
    assert body["modalities"] == ["image", "text", "audio"]


def test_the_docs_page_loads_its_assets_from_the_service(server: Server, page: Page) -> None:
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    response = page.goto(f"{server.url}/docs")
    assert response is not None and response.ok
    expect(page.locator(PREDICT)).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("fusion-serve")
    assert failed == []


KEY = "browser-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir, api_keys=KEY) as s:
        yield s


def test_with_api_keys_the_authorize_button_takes_the_key(keyed: Server, page: Page) -> None:
    page.goto(f"{keyed.url}/docs")
    operation = page.locator(PREDICT)
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator('tr[data-property-name="text"] input[type=text]').fill("no key yet")
    operation.get_by_role("button", name="Execute").click()
    live = operation.locator(".live-responses-table")
    expect(live.locator("tbody td.response-col_status")).to_have_text("401")

    page.locator(".auth-wrapper .authorize").click()
    dialog = page.locator(".modal-ux")
    dialog.locator("input").fill(KEY)
    dialog.locator(".auth-btn-wrapper button.authorize").click()
    dialog.locator(".auth-btn-wrapper button.btn-done").click()
    operation.get_by_role("button", name="Execute").click()
    expect(live.locator("tbody td.response-col_status")).to_have_text("200")
    body = json.loads(live.locator("tbody .response-col_description pre").first.inner_text())
    assert body["modalities"] == ["text"]
