"""Decoded inputs -> model-ready CPU tensors, as the artifact's config says. Shared by the service and training."""
from __future__ import annotations

from math import gcd
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from scipy.signal import resample_poly
from torchvision.transforms.v2 import functional as F

from app.inputs.limits import Waveform
from app.model.batch import Sample
from app.model.spec import ArtifactSpec, AudioSpec, ImageSpec, TextSpec
from app.model.tokenizer import Tokenizer

T = TypeVar("T")
_HIGH_DEPTH_MODES = {"I;16": 257.0, "I;16L": 257.0, "I;16B": 257.0, "I;16N": 257.0}
# Modes Pillow cannot convert to L or RGB directly.
_CONVERT_FIRST = {"La": "LA", "LAB": "RGB"}


class Preprocessor:
    """Per-sample transforms for one model. Thread-safe: it holds no mutable state."""

    def __init__(self, spec: ArtifactSpec) -> None:
        self.spec = spec
        self._image = ImagePreprocessor(spec.image) if spec.image else None
        self._text = TextPreprocessor(spec.text) if spec.text else None
        self._audio = AudioPreprocessor(spec.audio) if spec.audio else None

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
    """Any mode -> `channels` (alpha composited over black) -> resize to size² -> float tensor, normalised."""

    def __init__(self, spec: ImageSpec) -> None:
        self.mode = "L" if spec.channels == 1 else "RGB"
        self.size = spec.size
        self.mean, self.std = list(spec.mean), list(spec.std)

    def __call__(self, im: Image.Image) -> torch.Tensor:
        im = to_mode(im, self.mode)
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
    """Text -> token ids [L], 1 <= L <= max_tokens."""

    def __init__(self, spec: TextSpec) -> None:
        self.tokenizer = Tokenizer(spec.tokenizer)
        self.max_tokens = spec.max_tokens

    def __call__(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text, self.max_tokens), dtype=torch.long)


class AudioPreprocessor:
    """Downmix to mono, resample to the model's rate, keep the loudest clip-length window (or zero-pad)."""

    def __init__(self, spec: AudioSpec) -> None:
        self.sample_rate = spec.sample_rate
        self.clip_samples = spec.clip_samples

    def __call__(self, wave: Waveform) -> torch.Tensor:
        mono = wave.samples.mean(axis=1, dtype=np.float32)
        if wave.sample_rate != self.sample_rate:
            g = gcd(wave.sample_rate, self.sample_rate)
            mono = resample_poly(mono, self.sample_rate // g, wave.sample_rate // g).astype(np.float32)
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
