"""Decoded inputs -> model-ready CPU tensors, as the artifact's config says. Shared by the service and training."""
from __future__ import annotations

import functools
import unicodedata
from math import gcd
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import signal
from scipy.signal import resample_poly
from torchvision.transforms.v2 import functional as F

from app.inputs import ink
from app.inputs.limits import Waveform
from app.model.batch import Sample
from app.model.spec import ArtifactSpec, AudioSpec, ImageSpec, TextSpec
from app.model.tokenizer import Tokenizer

T = TypeVar("T")
_HIGH_DEPTH_MODES = {"I;16": 257.0, "I;16L": 257.0, "I;16B": 257.0, "I;16N": 257.0}
# Modes Pillow cannot convert to L or RGB directly.
_CONVERT_FIRST = {"La": "LA", "LAB": "RGB"}


# Pixels of the decoded picture's shorter side per pixel of the model's input: ink that fills a third of the frame
# still covers 4 source pixels per model pixel, what `ink.render_ink` samples (twice the size, box-averaged).
DECODE_SIDE_PER_PIXEL = 12


class Preprocessor:
    """Per-sample transforms for one model. Thread-safe: it holds no mutable state."""

    def __init__(self, spec: ArtifactSpec) -> None:
        self.spec = spec
        self._image = ImagePreprocessor(spec.image) if spec.image else None
        self._text = TextPreprocessor(spec.text) if spec.text else None
        self._audio = AudioPreprocessor(spec.audio) if spec.audio else None

    @property
    def image_decode_side(self) -> int | None:
        """The smallest side an image needs to be decoded at for this model (`decode_image`'s `min_side`)."""
        return DECODE_SIDE_PER_PIXEL * self.spec.image.size if self.spec.image else None

    def __call__(
        self, image: Image.Image | None = None, text: str | None = None, audio: Waveform | None = None
    ) -> Sample:
        """A Sample holding the given modalities; a modality the model lacks must not be passed."""
        return Sample(
            image=None if image is None else _need(self._image, "image")(image),
            text=None if text is None else _need(self._text, "text")(text),
            audio=None if audio is None else _need(self._audio, "audio")(audio),
        )


def _need(p: T | None, name: str) -> T:
    if p is None:
        raise ValueError(f"this model has no {name} encoder")
    return p


class ImagePreprocessor:
    """Any mode -> `channels` (alpha composited over black) -> the image section's normalisation -> size² ->
    float tensor, normalised.

    `fit="stretch"` resizes the whole picture to size² (its aspect is not kept); `polarity="light_on_dark"` then
    inverts pictures whose ink is darker than their background (app.inputs.ink decides). `fit="ink"` finds the ink
    (app.inputs.ink), takes the square around it that the ink fills to `ink_fraction`, and gives the model the ink's
    strength over a flattened background (0 background, 1 full ink; light on dark), whatever the picture's size,
    lighting, paper tone or ink colour; each channel gets that map.
    """

    def __init__(self, spec: ImageSpec) -> None:
        self.mode = "L" if spec.channels == 1 else "RGB"
        self.size = spec.size
        self.channels = spec.channels
        self.fit = spec.fit
        self.polarity = spec.polarity
        self.ink_fraction = spec.ink_fraction
        self.mean, self.std = list(spec.mean), list(spec.std)
        # The per-channel normalisation of an ink map, as F.normalize does it (float32 subtract, then divide).
        self._ink_mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
        self._ink_std = np.asarray(spec.std, dtype=np.float32)[:, None, None]

    def __call__(self, im: Image.Image) -> torch.Tensor:
        im = to_mode(im, self.mode)
        if self.fit == "ink":
            found = ink.analyse(im)
            strength = ink.render_ink(im, found, ink.square_around_ink(found, self.ink_fraction), self.size)
            return torch.from_numpy((strength[None] - self._ink_mean) / self._ink_std)
        if self.polarity == "light_on_dark" and ink.analyse(im).dark:
            im = ImageOps.invert(im)
        if im.size != (self.size, self.size):
            im = im.resize((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        # The functional API: the same ops as a v2.Compose without its per-call dispatch overhead.
        x = F.to_dtype(F.pil_to_tensor(im), torch.float32, scale=True)
        return F.normalize(x, self.mean, self.std, inplace=True)


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode (16-bit, float, palette, CMYK, Lab, 1-bit, with or without alpha) to 8-bit L or RGB."""
    if im.mode in _CONVERT_FIRST:
        im = im.convert(_CONVERT_FIRST[im.mode])
    if im.mode in _HIGH_DEPTH_MODES or im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode in _HIGH_DEPTH_MODES:
            arr = arr / _HIGH_DEPTH_MODES[im.mode]
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, rgba)
    return im if im.mode == mode else im.convert(mode)


class TextPreprocessor:
    """Text -> (with `normalize="digits"`, fold_digits) -> token ids [L], 1 <= L <= max_tokens."""

    def __init__(self, spec: TextSpec) -> None:
        self.tokenizer = Tokenizer(spec.tokenizer)
        self.max_tokens = spec.max_tokens
        self.fold = spec.normalize == "digits"

    def __call__(self, text: str) -> torch.Tensor:
        if self.fold:
            text = fold_digits(text)
        return torch.tensor(self.tokenizer.encode(text, self.max_tokens), dtype=torch.long)


_KEYCAP_MARKS = dict.fromkeys(map(ord, "\ufe0e\ufe0f\u20e3"), None)


def fold_digits(text: str) -> str:
    """NFKC (full-width, circled and superscript digits become ASCII), emoji keycaps lose their marks
    (7\ufe0f\u20e3 -> 7), and every other script's decimal digits (Arabic-Indic, Devanagari, ...) become ASCII."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text).translate(_KEYCAP_MARKS)
    return "".join(str(unicodedata.decimal(c)) if not c.isascii() and c.isdecimal() else c for c in text)


class AudioPreprocessor:
    """Downmix to mono, resample to the model's rate, keep a clip-length window (or zero-pad): the loudest one
    (`window="loudest"`), or the one centred on the speech (`window="speech"`, see find_speech)."""

    def __init__(self, spec: AudioSpec) -> None:
        self.sample_rate = spec.sample_rate
        self.clip_samples = spec.clip_samples
        self.speech = spec.window == "speech"

    def __call__(self, wave: Waveform) -> torch.Tensor:
        # One channel's mean is itself: skip the reduction's machinery for the common case.
        samples = wave.samples
        if samples.shape[1] == 1:
            mono = samples[:, 0].astype(np.float32, copy=False)
        else:
            mono = samples.mean(axis=1, dtype=np.float32)
        if wave.sample_rate != self.sample_rate:
            g = gcd(wave.sample_rate, self.sample_rate)
            mono = resample_poly(mono, self.sample_rate // g, wave.sample_rate // g).astype(np.float32)
        if self.speech and len(mono) > self.clip_samples:
            start = find_speech(mono, self.clip_samples, self.sample_rate)
            return torch.from_numpy(np.ascontiguousarray(mono[start : start + self.clip_samples], dtype=np.float32))
        return torch.from_numpy(fit_clip(mono, self.clip_samples))


def fit_clip(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly n samples: zero-padded at the end if shorter, else the n-sample window with the most energy."""
    if len(x) <= n:
        out = np.zeros(n, dtype=np.float32)
        out[: len(x)] = x
        return out
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    start = int(np.argmax(energy[n:] - energy[:-n]))
    return np.ascontiguousarray(x[start : start + n], dtype=np.float32)


def find_speech(x: np.ndarray, n: int, rate: int) -> int:
    """Start of the n-sample window of x (len(x) > n) centred on its speech.

    Speech is the 10 ms frames whose energy above 200 Hz (a high-pass that discounts hum and rumble) stands clearly
    above the clip's noise floor (its 20th percentile frame); the window holding most of that excess is then
    shifted to centre its excess, so a word shorter than the window is not cut at an edge. A clip with no such
    frames gets the loudest window.
    """
    hop = max(1, rate // 100)
    filtered = signal.sosfilt(_highpass(rate), x.astype(np.float64))
    frames = len(x) // hop
    energy = np.square(filtered[: frames * hop]).reshape(frames, hop).sum(axis=1)
    excess = np.maximum(energy - 3.0 * np.percentile(energy, 20), 0.0)
    span = n // hop
    if frames <= span or not excess.any():
        return int(np.argmax(_window_sums(x.astype(np.float64) ** 2, n)))
    best = int(np.argmax(_window_sums(excess, span)))
    inside = excess[best : best + span]
    centre = best + 0.5 + float((inside * np.arange(span)).sum() / inside.sum())
    start_frame = min(max(round(centre - span / 2), 0), frames - span)
    return min(start_frame * hop, len(x) - n)


@functools.lru_cache(maxsize=8)
def _highpass(rate: int) -> np.ndarray:
    return signal.butter(2, min(200.0, rate / 4), btype="highpass", fs=rate, output="sos")


def _window_sums(values: np.ndarray, n: int) -> np.ndarray:
    total = np.concatenate([[0.0], np.cumsum(values)])
    return total[n:] - total[:-n]
