"""The held-out split: digits made differently from the training data, to measure a model on inputs it never saw.

- Images: held-out font families (a fixed quarter, app.training.synth_image.is_heldout_family) and held-out UCI
  handwriting, drawn by this module's own renderer (PIL text at full size, not the 28x28 glyph bank), mostly dark
  ink on paper, in photos and scans of any size (48 px to 1600 px), with perspective, uneven light, paper tone,
  shadows, blur, noise and JPEG; some light on dark (screens, boards).
- Audio: espeak-ng voice variants that train/val/test never use, half of them in dialects they never use
  (en-gb-scotland, es-419, pt-br, ...), speaking 100-260 words per minute; recordings with leading and trailing
  silence up to 2 s, levels from -40 to 0 dBFS, noise at 0-20 dB SNR (hum, pink noise, time-reversed babble),
  a comb-filter room, telephone bands, clipping; stored at 8-48 kHz, mono or stereo, WAV or FLAC.
- Text: every caption names the digit, in templates and surrounding sentences that train/val/test never use,
  with number words inside other words ("someone", "often"), other scripts' digits and emoji keycaps, typos.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import signal

from app.training.synth_audio import SAMPLE_RATE, UtteranceBank, Voice
from app.training.synth_text import DIGIT_WORDS, add_typos

# Variants train/val/test never use (synth_audio.VARIANTS are theirs), and dialects of their languages.
HELDOUT_VARIANTS: tuple[str, ...] = (
    "adam", "Alicia", "aunty", "boris", "david", "edward", "Gene", "Hugo", "iven", "john", "Lee", "norbert",
    "shelby", "travis", "zac", "anika", "m8", "klatt4",
)  # fmt: skip
HELDOUT_DIALECTS: tuple[str, ...] = (
    "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp", "es-419", "pt-br", "fr-be", "fr-ch", "ru-lv",
)  # fmt: skip
HELDOUT_SPEED = (100, 260)
HELDOUT_PITCH = (5, 95)

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "any": (
        "{d}", "[{d}]", "-> {d}", "({d})", "{d}?!", "Digit: {d}", "the answer is {d}.", "someone wrote {d} on the whiteboard",
        "I'm fairly sure this is {d}", "that looks like {d} to me, honestly", "my son drew {d} here",
        "{d} - often confused but not this time", "label {d} (checked twice)", "photo of the number {d}",
        "is it {d}? yes", "the tone says {d}", "gone over it again: {d}", "the money is on {d}",
        "done, it is {d}", "in the tent I found {d}", "height chart shows {d}",
    ),
    "en": ("I see a {d}", "it's definitely a {d}", "looks like a {d}, no doubt", "a handwritten {d} on a napkin"),
    "de": ("Ich sehe eine {d}", "die Ziffer {d}, ohne Zweifel", "das war eine {d}"),
    "fr": ("Je vois un {d}", "c'est bien le {d}", "sans doute un {d}"),
    "es": ("Veo un {d}", "el dígito es {d}", "sin duda un {d}"),
    "it": ("vedo un {d}", "la cifra è {d}"),
    "nl": ("ik zie een {d}", "dat is een {d}"),
    "pt": ("vejo um {d}", "o dígito é {d}"),
    "pl": ("widzę {d}", "to cyfra {d}"),
    "ru": ("Я вижу {d}", "это цифра {d}"),
    "uk": ("я бачу {d}", "це цифра {d}"),
    "tr": ("{d} görüyorum", "bu rakam {d}"),
    "zh": ("我看到的是{d}", "答案是{d}", "应该是{d}吧"),
}  # fmt: skip
_SCRIPT_STARTS = (0x0660, 0x06F0, 0x0966, 0xFF10)


@dataclass(frozen=True)
class HeldoutSources:
    """What the held-out renderers draw from."""

    fonts: tuple[Path, ...]
    handwriting: np.ndarray  # [N, 40, 40] strokes in [0, 1]
    handwriting_labels: np.ndarray
    utterances: UtteranceBank


def choose_voices(rng: np.random.Generator, languages: list[str], dialects: list[str], variants: list[str],
                  count: int) -> list[Voice]:
    """`count` held-out voices: a held-out variant each, half in a held-out dialect, half in a training language."""
    voices = []
    for i in range(count):
        pool = dialects if (i % 2 == 0 and dialects) else languages
        voices.append(Voice(language=pool[int(rng.integers(len(pool)))], variant=variants[i % len(variants)],
                            speed=int(rng.integers(HELDOUT_SPEED[0], HELDOUT_SPEED[1] + 1)),
                            pitch=int(rng.integers(HELDOUT_PITCH[0], HELDOUT_PITCH[1] + 1))))
    return voices


# ---------------------------------------------------------------- images


def _glyph(sources: HeldoutSources, label: int, rng: np.random.Generator, height: int) -> np.ndarray:
    """Ink strength [h, w] of the digit, about `height` pixels tall."""
    use_font = sources.fonts and (rng.random() < 0.6 or not len(sources.handwriting))
    if use_font:
        font = ImageFont.truetype(str(sources.fonts[int(rng.integers(len(sources.fonts)))]), max(8, int(height * 1.3)))
        left, top, right, bottom = font.getbbox(str(label))
        canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
        ImageDraw.Draw(canvas).text((2 - left, 2 - top), str(label), font=font, fill=255)
        return np.asarray(canvas, dtype=np.float32) / 255.0
    choices = np.flatnonzero(sources.handwriting_labels == label)
    strokes = sources.handwriting[choices[int(rng.integers(len(choices)))]]
    ys, xs = np.nonzero(strokes > 0.1)
    crop = strokes[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = height / crop.shape[0]
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    return np.clip(np.asarray(Image.fromarray(crop, mode="F").resize(size, Image.Resampling.BICUBIC)), 0, 1)


def render_image(sources: HeldoutSources, label: int, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A photo, scan or screenshot of the digit; returns the picture and the file suffix to store it under."""
    roll = rng.random()
    side = int(rng.choice([48, 64, 96, 128, 200, 320, 480])) if roll < 0.9 else int(rng.choice([1024, 1600]))
    width, height = side, int(side * rng.choice([1.0, 0.75, 1.333]))
    glyph = _glyph(sources, label, rng, max(6, int(rng.uniform(0.35, 0.85) * min(width, height))))
    gh, gw = glyph.shape
    if gw > width * 0.95 or gh > height * 0.95:
        shrink = min(width * 0.95 / gw, height * 0.95 / gh)
        glyph = np.asarray(Image.fromarray(glyph, mode="F").resize((max(1, int(gw * shrink)), max(1, int(gh * shrink)))))
        gh, gw = glyph.shape
    alpha = np.zeros((height, width), np.float32)
    top = int(rng.integers(0, height - gh + 1))
    left = int(rng.integers(0, width - gw + 1))
    alpha[top : top + gh, left : left + gw] = glyph
    # A slight perspective (the camera not square to the page) and a small rotation.
    jitter = 0.06 * min(width, height)
    corners = [(0, 0), (0, height), (width, height), (width, 0)]
    quad = [c + rng.uniform(-jitter, jitter) for corner in corners for c in corner]
    alpha_img = Image.fromarray(alpha, mode="F").transform((width, height), Image.Transform.QUAD, quad,
                                                          resample=Image.Resampling.BILINEAR)
    alpha = np.clip(np.asarray(alpha_img), 0, 1)
    light_paper = rng.random() < 0.8
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    falloff = 1.0 - rng.uniform(0.0, 0.35) * np.hypot((xx - cx) / width, (yy - cy) / height)
    if light_paper:
        paper = np.array([rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.0), rng.uniform(0.6, 0.95)])
        pen = np.array([rng.uniform(0.0, 0.3), rng.uniform(0.0, 0.3), rng.uniform(0.0, 0.45)])
    else:
        paper = np.array([rng.uniform(0.0, 0.2), rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.25)])
        pen = np.full(3, rng.uniform(0.7, 1.0))
    background = paper[None, None, :] * falloff[..., None]
    if rng.random() < 0.3:  # a soft shadow across part of the page
        edge, soft = rng.uniform(0.2, 0.8) * width, rng.uniform(0.02, 0.1) * width
        depth = rng.uniform(0.1, 0.4)
        background = background * (1 - depth / (1 + np.exp((xx - edge) / soft)))[..., None]
    picture = background * (1 - alpha[..., None]) + pen[None, None, :] * alpha[..., None]
    picture = picture + rng.normal(0, rng.uniform(0.0, 0.05), picture.shape)
    out = Image.fromarray(np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8), mode="RGB")
    if rng.random() < 0.4:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0) * side / 100))
    if rng.random() < 0.3:
        out = out.convert("L")
    return out, (".jpg" if rng.random() < 0.6 else ".png")


def save_image(image: Image.Image, path: Path, rng: np.random.Generator) -> None:
    if path.suffix == ".jpg":
        image.save(path, format="JPEG", quality=int(rng.integers(40, 95)))
    else:
        image.save(path, format="PNG")


# ---------------------------------------------------------------- audio


def _comb_room(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A Schroeder room: parallel feedback combs (not the exponential-noise response training uses)."""
    out = np.zeros(len(x) + rate // 2, np.float64)
    padded = np.concatenate([x, np.zeros(rate // 2)])
    for delay_ms in rng.uniform(25, 45, 4):
        delay = int(delay_ms * rate / 1000)
        gain = rng.uniform(0.5, 0.8)
        a = np.zeros(delay + 1)
        a[0], a[-1] = 1.0, -gain
        out += signal.lfilter([1.0], a, padded)
    wet = out / 4
    mix = rng.uniform(0.2, 0.6)
    return ((1 - mix) * padded + mix * wet * (np.abs(padded).max() / max(np.abs(wet).max(), 1e-8))).astype(np.float32)


def _background(sources: HeldoutSources, n: int, rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # hum
        t = np.arange(n) / SAMPLE_RATE
        base = float(rng.choice([50.0, 60.0]))
        noise = sum(np.sin(2 * np.pi * base * k * t) / k for k in range(1, 6)) + 0.05 * rng.standard_normal(n)
    elif kind == 1:  # pink noise by filtering white noise
        noise = signal.lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786],
                               [1, -2.494956002, 2.017265875, -0.522189400], rng.standard_normal(n))
    else:  # babble: held-out voices talking over each other, time-reversed so that no digit can be made out
        noise = np.zeros(n)
        for index in rng.integers(0, len(sources.utterances), size=6):
            u = sources.utterances.utterance(int(index))[::-1][:n]
            start = int(rng.integers(0, n - len(u) + 1))
            noise[start : start + len(u)] += u
    noise = np.asarray(noise, dtype=np.float64)
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-8)).astype(np.float32)


def render_audio(sources: HeldoutSources, label: int, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    """A recording of the digit; returns samples [frames, channels], its rate and the file suffix."""
    candidates = np.flatnonzero(sources.utterances.labels == label)
    speech = sources.utterances.utterance(int(candidates[rng.integers(len(candidates))])).astype(np.float32)
    speech_power = float(np.mean(speech**2)) + 1e-10
    if rng.random() < 0.3:
        speech = _comb_room(speech, SAMPLE_RATE, rng)
    before, after = (int(rng.uniform(0, 2.0) * SAMPLE_RATE) for _ in range(2))
    x = np.concatenate([np.zeros(before, np.float32), speech, np.zeros(after, np.float32)])
    if rng.random() < 0.8:
        snr = rng.uniform(0.0, 20.0)
        x = x + _background(sources, len(x), rng) * np.float32(math.sqrt(speech_power / 10 ** (snr / 10)))
    rate = int(rng.choice([8000, 16000, 22050, 44100, 48000]))
    if rng.random() < 0.2:  # telephone band at 8 kHz
        rate = 8000
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        x = signal.resample_poly(x, rate // g, SAMPLE_RATE // g).astype(np.float32)
    if rate == 8000:
        x = signal.sosfilt(signal.butter(3, (300, 3400), btype="bandpass", fs=8000, output="sos"), x)
    x = x * (10 ** (rng.uniform(-40.0, 0.0) / 20) / max(float(np.abs(x).max()), 1e-8))
    if rng.random() < 0.1:
        x = np.clip(x * rng.uniform(2.0, 6.0), -1.0, 1.0)
    channels = 2 if rng.random() < 0.3 else 1
    samples = np.repeat(np.asarray(x, np.float32)[:, None], channels, axis=1)
    return samples, rate, (".flac" if rng.random() < 0.3 else ".wav")


def save_audio(samples: np.ndarray, rate: int, path: Path) -> None:
    sf.write(path, samples, rate, subtype="PCM_16", format="FLAC" if path.suffix == ".flac" else "WAV")


# ---------------------------------------------------------------- text


def render_text(label: int, rng: np.random.Generator) -> str:
    """A caption naming the digit in a template train/val/test never use."""
    languages = [lang for lang in DIGIT_WORDS if lang in _TEMPLATES or lang in ("num", "en")]
    weights = np.array([0.3 if lang == "num" else 0.2 if lang == "en" else 0.5 / (len(languages) - 2)
                        for lang in languages])
    language = languages[int(rng.choice(len(languages), p=weights / weights.sum()))]
    word = DIGIT_WORDS[language][label]
    if language == "num":
        roll = rng.random()
        if roll < 0.15:
            word = chr(_SCRIPT_STARTS[int(rng.integers(len(_SCRIPT_STARTS)))] + label)
        elif roll < 0.25:
            word = f"{label}\ufe0f\u20e3"
    pools = ["any"] + ([language] if language in _TEMPLATES else []) + (["en"] if language == "num" else [])
    templates = [t for pool in pools for t in _TEMPLATES[pool]]
    text = templates[int(rng.integers(len(templates)))].format(d=word)
    if len(text) >= 8 and rng.random() < 0.25:  # a typo in a bare word would often leave no word
        text = add_typos(text, rng, count=1)
    return text


def image_bytes(image: Image.Image, suffix: str, quality: int = 85) -> bytes:
    """The encoded file (for tests)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if suffix == ".jpg" else "PNG", quality=quality)
    return buffer.getvalue()
