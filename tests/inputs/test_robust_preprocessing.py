"""The normalisation steps of the shared preprocessing: ink and polarity (image), digit folding (text), the speech
window (audio); and that an artifact without them is preprocessed exactly as before."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from app.inputs.limits import Waveform
from app.inputs.preprocess import (
    AudioPreprocessor,
    ImagePreprocessor,
    TextPreprocessor,
    find_speech,
    fold_digits,
)
from app.model.spec import AudioSpec, ImageSpec, TextSpec

ROOT = Path(__file__).resolve().parents[2]
INK = ImageSpec(fit="ink", polarity="light_on_dark", size=28)


def _digit() -> Image.Image:
    """The README sample's 7 (a noisy test-split picture), cleaned to light ink on black."""
    x = np.asarray(Image.open(ROOT / "bench" / "assets" / "digit.png").convert("L"), np.float32) / 255
    return Image.fromarray(np.round(np.clip((x - 0.35) / 0.3, 0, 1) * 255).astype(np.uint8), "L")


def _on_paper(glyph: Image.Image, size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """The glyph (light on dark) drawn as dark ink on lit, tinted paper, in `box` of a picture of `size`."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    paper = 0.85 - 0.15 * xs / w + 0.05 * ys / h  # uneven light
    alpha = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = box
    alpha[y0:y1, x0:x1] = np.asarray(glyph.resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC), np.float32) / 255
    grey = paper * (1 - alpha) + 0.1 * alpha
    rgb = np.stack([grey, grey * 0.97, grey * 0.9], axis=-1)
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def test_default_image_spec_is_preprocessed_as_before() -> None:
    im = _digit().resize((40, 30))
    expected = np.asarray(im.resize((28, 28), Image.Resampling.BILINEAR, reducing_gap=3.0), np.float32) / 255
    got = ImagePreprocessor(ImageSpec(size=28))(im)
    np.testing.assert_allclose(got[0].numpy(), (expected - 0.5) / 0.5, atol=1e-6)


def test_dark_ink_on_paper_reads_like_light_ink_on_black() -> None:
    pre = ImagePreprocessor(INK)
    crop = pre(_digit())
    photo = pre(_on_paper(_digit(), (200, 160), (50, 30, 150, 130)))
    inverted = pre(ImageOps.invert(_digit()))
    # (A blank picture is 0.21 away from the crop.)
    assert float((crop - photo).abs().mean()) < 0.08
    assert float((crop - inverted).abs().mean()) < 0.01


def test_a_phone_photo_with_the_digit_in_the_middle_reads_like_the_crop() -> None:
    pre = ImagePreprocessor(INK)
    photo = _on_paper(_digit(), (4000, 3000), (1600, 1000, 2400, 1800))
    assert float((pre(_digit()) - pre(photo)).abs().mean()) < 0.08


def test_polarity_alone_inverts_dark_ink_with_a_stretch_fit() -> None:
    spec = ImageSpec(polarity="light_on_dark", size=28)
    as_is = ImagePreprocessor(ImageSpec(size=28))
    assert torch.allclose(ImagePreprocessor(spec)(ImageOps.invert(_digit())), as_is(_digit()), atol=1e-6)


def test_a_blank_picture_gives_an_empty_ink_map() -> None:
    out = ImagePreprocessor(INK)(Image.new("L", (50, 40), 200))
    assert torch.allclose(out, torch.full_like(out, -1.0))


@pytest.mark.parametrize(
    ("text", "folded"),
    [("7", "7"), ("it is ٧", "it is 7"), ("۷ or ７", "7 or 7"), ("7\ufe0f\u20e3!", "7!"), ("सात ७", "सात 7"),
     ("①", "1"), ("seven", "seven"), ("七", "七")],
)
def test_fold_digits(text: str, folded: str) -> None:
    assert fold_digits(text) == folded


def test_text_normalisation_only_when_configured() -> None:
    assert TextPreprocessor(TextSpec(normalize="digits"))("٧").tolist() == TextPreprocessor(TextSpec())("7").tolist()
    assert TextPreprocessor(TextSpec())("٧").tolist() != TextPreprocessor(TextSpec())("7").tolist()


def _tone_in_noise(seconds: float, at: float, rng: np.random.Generator) -> np.ndarray:
    rate = 16000
    x = 0.05 * rng.standard_normal(int(seconds * rate)).astype(np.float32)
    t = np.arange(int(0.5 * rate)) / rate
    word = 0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(t.size)
    start = int(at * rate)
    x[start : start + word.size] += word.astype(np.float32)
    return x


def test_speech_window_centres_the_word_in_a_long_noisy_clip() -> None:
    x = _tone_in_noise(60.0, 41.0, np.random.default_rng(0))
    start = find_speech(x, 24000, 16000)
    centre = (start + 12000) / 16000
    assert abs(centre - 41.25) < 0.1


def test_speech_window_is_used_only_when_configured() -> None:
    rng = np.random.default_rng(1)
    x = _tone_in_noise(5.0, 3.0, rng)
    wave = Waveform(samples=x[:, None], sample_rate=16000)
    speech = AudioPreprocessor(AudioSpec(window="speech"))(wave).numpy()
    loudest = AudioPreprocessor(AudioSpec())(wave).numpy()
    assert speech.shape == loudest.shape == (24000,)
    word = np.abs(speech).argmax() / 16000
    assert 0.4 < word < 1.1  # the word is in the middle of the window, not at an edge
