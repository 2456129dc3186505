"""/playground in a real headless Chromium, as a person uses it: drop an image, type text, record from the
microphone (Chromium's fake device playing a WAV file), pick a model, give an API key; the charts show what the
API answers."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.inputs.parts import RawInputs
from tests.browser.test_docs_page import CHROMIUM, FLAGS
from tests.helpers import LABELS, png_bytes, tiny_spec, write_tiny_artifact
from tests.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.needs_tool(str(CHROMIUM), apt="chromium")]

KEY = "playground-key-0123456789abcdef"
TONE_HZ = 440.0


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two-models")
    write_tiny_artifact(root / "tiny")
    write_tiny_artifact(root / "no-audio", tiny_spec(name="no-audio", fusion="weighted_sum",
                                                     modalities=("image", "text")), seed=1)
    return root


@pytest.fixture(scope="module")
def server(two_models: Path) -> Iterator[Server]:
    with running_server(two_models, default_model="tiny") as s:
        yield s


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Chromium's fake microphone plays (in a loop): a 440 Hz tone."""
    path = tmp_path_factory.mktemp("mic") / "tone.wav"
    t = np.arange(48000 * 3) / 48000
    sf.write(path, 0.5 * np.sin(2 * np.pi * TONE_HZ * t), 48000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[Browser]:
    media = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
             f"--use-file-for-fake-audio-capture={microphone_wav}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS + media)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def drop_file(page: Page, selector: str, name: str, data: bytes, mime: str) -> None:
    """Drag a file from the desktop onto `selector`, as a person does (a real DataTransfer in a drop event)."""
    page.evaluate(
        """([selector, name, bytes, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [selector, name, list(data), mime],
    )


def bars(page: Page, chart: str) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        f"#{chart} rect", "rects => rects.map(r => ({...r.dataset, width: r.getAttribute('width')}))"
    )


def test_drop_an_image_type_text_and_the_charts_show_the_api_answer(server: Server, page: Page) -> None:
    image = png_bytes((24, 24))
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc or urlsplit(request.url).scheme))

    page.goto(f"{server.url}/")
    assert urlsplit(page.url).path == "/playground"
    expect(page.locator("#model option")).to_have_count(2)
    expect(page.locator("#model")).to_have_value("tiny")
    drop_file(page, "#drop", "photo.png", image, "image/png")
    expect(page.locator("#image-preview")).to_be_visible()
    page.fill("#text", "a small dog barking")
    with page.expect_response(lambda r: "/predict" in r.url) as answered:
        page.click("#predict")
    assert answered.value.status == 200
    expect(page.locator("#probabilities rect")).to_have_count(len(LABELS))

    api = httpx.post(f"{server.url}/v1/models/tiny/predict", params={"explain": "true", "top_k": 3}, timeout=30,
                     files={"image": ("photo.png", image, "image/png"), "text": (None, "a small dog barking")}).json()
    assert api["modalities"] == ["image", "text"]
    probability_bars = bars(page, "probabilities")
    assert [b["label"] for b in probability_bars] == list(LABELS)
    for b in probability_bars:
        assert float(b["value"]) == pytest.approx(api["probabilities"][b["label"]], abs=1e-5)
        assert float(b["width"]) == pytest.approx(420 * api["probabilities"][b["label"]], abs=0.01)  # drawn so
    attribution_bars = bars(page, "attributions")
    expected = api["explanation"]["attributions"]
    assert [(b["label"], b["modality"]) for b in attribution_bars] == [
        (label, m) for label in expected for m in ("image", "text")]
    for b in attribution_bars:
        assert float(b["value"]) == pytest.approx(expected[b["label"]][b["modality"]], abs=1e-5)
    expect(page.locator("#answer")).to_have_attribute("data-label", api["top"][0]["label"])
    expect(page.locator("#verdict")).to_have_attribute("data-conflict", str(api["explanation"]["conflict"]).lower())
    expect(page.locator("#alone tr[data-modality]")).to_have_count(2)
    expect(page.locator("#fusion")).to_contain_text("attention")
    # The page, its script and styles, the API: nothing else (blob: is the dropped image's preview).
    assert hosts <= {urlsplit(server.url).netloc, "blob"}


def test_a_recording_from_the_microphone_reaches_the_service_and_is_predicted(
    server: Server, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[RawInputs] = []
    engine = server.engine
    predict = engine.predict

    async def spy(name, raws, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - Engine.predict
        received.extend(raws)
        return await predict(name, raws, *args, **kwargs)

    monkeypatch.setattr(engine, "predict", spy)
    page.goto(f"{server.url}/playground")
    expect(page.locator("#model option")).to_have_count(2)
    page.click("#record")
    expect(page.locator("#audio-status")).to_contain_text("Recording")
    page.wait_for_timeout(1500)
    page.click("#stop")
    expect(page.locator("#audio-status")).to_contain_text("Recorded")
    expect(page.locator("#audio-preview")).to_be_visible()
    with page.expect_response(lambda r: "/predict" in r.url) as answered:
        page.click("#predict")

    (raw,) = received  # what the service got: the recording, as WAV
    assert raw.modalities == ("audio",) and raw.audio is not None and raw.audio[:4] == b"RIFF"
    samples, rate = sf.read(io.BytesIO(raw.audio))
    assert samples.ndim == 1 and len(samples) / rate > 1.0  # about the 1.5 s recorded
    spectrum = np.abs(np.fft.rfft(samples[rate // 4:]))  # past the device's start-up
    assert np.fft.rfftfreq(len(samples) - rate // 4, 1 / rate)[spectrum.argmax()] == pytest.approx(TONE_HZ, abs=5)

    body = answered.value.json()
    assert answered.value.status == 200 and body["modalities"] == ["audio"]
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert list(body["explanation"]["modalities"]) == ["audio"]
    expect(page.locator("#probabilities rect")).to_have_count(len(LABELS))
    expect(page.locator("#attributions rect[data-modality=audio]")).to_have_count(3)


def test_the_model_picker_sends_to_the_chosen_model_with_its_inputs(server: Server, page: Page) -> None:
    page.goto(f"{server.url}/playground")
    expect(page.locator("#model option")).to_have_count(2)
    expect(page.locator("#audio-input")).not_to_have_class("input disabled")
    page.select_option("#model", "no-audio")
    expect(page.locator("#audio-input")).to_have_class("input disabled")  # this model takes no audio
    expect(page.locator("#model-info")).to_contain_text("Fusion: weighted_sum")
    page.set_input_files("#image-file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": png_bytes()}])
    page.fill("#text", "hello")
    with page.expect_response(lambda r: "/predict" in r.url) as answered:
        page.click("#predict")
    body = answered.value.json()
    assert urlsplit(answered.value.url).path == "/v1/models/no-audio/predict"
    assert body["model"] == "no-audio" and body["modalities"] == ["image", "text"]
    expect(page.locator("#fusion")).to_contain_text("weights image")


@pytest.fixture(scope="module")
def keyed(two_models: Path) -> Iterator[Server]:
    with running_server(two_models, default_model="tiny", api_keys=KEY) as s:
        yield s


def test_with_api_keys_the_key_field_opens_the_service(keyed: Server, page: Page) -> None:
    page.goto(f"{keyed.url}/")
    expect(page.locator("#status")).to_contain_text("needs an API key")
    page.fill("#api-key", "not-the-key-0123456789")
    page.dispatch_event("#api-key", "change")
    expect(page.locator("#status")).to_contain_text("does not accept this API key")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    expect(page.locator("#model option")).to_have_count(2)
    page.fill("#text", "with a key")
    with page.expect_request(lambda r: "/predict" in r.url) as sent, \
            page.expect_response(lambda r: "/predict" in r.url) as answered:
        page.click("#predict")
    assert sent.value.headers["authorization"] == f"Bearer {KEY}"
    assert answered.value.status == 200
    expect(page.locator("#results")).to_be_visible()
    assert json.loads(page.locator("#raw").text_content() or "")["modalities"] == ["text"]
