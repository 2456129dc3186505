"""What two versions of a model are compared on before one is served instead of the other (app.engine.runtime):
every subset of its modalities, random and realistic inputs through the service's own preprocessing."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from app.inputs.limits import Waveform
from app.inputs.preprocess import Preprocessor
from app.model.batch import Batch, Sample, collate
from app.model.tokenizer import Tokenizer


@dataclass(frozen=True)
class CheckInputs:
    """What two versions of a model are compared on. `batches`: for every non-empty subset of the model's
    modalities, random and realistic samples of it (texts of different lengths); last, one batch mixing every
    subset. `full`: samples with every modality (what `auto` times)."""

    batches: list[Batch]
    full: list[Sample]

    @classmethod
    def build(cls, preprocessor: Preprocessor) -> CheckInputs:
        modalities = preprocessor.spec.ordered_modalities
        pool = _random_samples(preprocessor, 2) + _realistic_samples(preprocessor)
        subsets = [s for r in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, r)]
        batches = [collate([_only(sample, subset) for sample in pool]) for subset in subsets]
        batches.append(collate([_only(sample, subset) for subset in reversed(subsets) for sample in pool[::2]]))
        return cls(batches, pool[::2])


def _only(sample: Sample, modalities: tuple[str, ...]) -> Sample:
    return Sample(**{m: getattr(sample, m) if m in modalities else None for m in ("image", "text", "audio")})


def _random_samples(preprocessor: Preprocessor, n: int) -> list[Sample]:
    spec, g = preprocessor.spec, torch.Generator().manual_seed(0)
    samples = []
    for i in range(n):
        image = text = audio = None
        if spec.image is not None:
            image = torch.rand(spec.image.channels, spec.image.size, spec.image.size, generator=g) * 4 - 2
        if spec.text is not None:
            vocab = Tokenizer(spec.text.tokenizer).vocab_size
            length = max(1, spec.text.max_tokens // (i + 1))
            text = torch.randint(1, vocab, (length,), generator=g)
        if spec.audio is not None:
            audio = torch.randn(spec.audio.clip_samples, generator=g) * (0.5 if i else 0.01)
        samples.append(Sample(image, text, audio))
    return samples


def _realistic_samples(preprocessor: Preprocessor) -> list[Sample]:
    """Inputs as a user sends them, through the service's own preprocessing: a drawn shape, label-like texts, a
    clip of tones shorter than the model's (zero-padded), and silence."""
    spec = preprocessor.spec
    images: list[Image.Image | None] = [None, None]
    if spec.image is not None:
        for k in range(2):
            im = Image.new("RGB", (40 + 8 * k, 36), (10, 10, 10))
            draw = ImageDraw.Draw(im)
            draw.ellipse((6, 4, 30 + 4 * k, 32), outline=(250, 240, 200), width=3)
            draw.line((4, 30, 36, 6 + 10 * k), fill=(200, 60, 60), width=2)
            images[k] = im
    texts: list[str | None] = [None, None]
    if spec.text is not None:
        texts = [str(spec.labels[0]), " ".join(f"a {label}" for label in spec.labels) + ", the last one is it"]
    audios: list[Waveform | None] = [None, None]
    if spec.audio is not None:
        rate = spec.audio.sample_rate
        t = np.arange(int(rate * spec.audio.clip_seconds * 0.6)) / rate
        tones = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((220.0, 440.0, 1250.0)))
        noise = np.random.default_rng(0).normal(0, 0.01, t.shape)
        clip = (0.2 * tones * np.hanning(len(t)) + noise).astype(np.float32)
        audios = [Waveform(clip[:, None], rate), Waveform(np.zeros((rate // 4, 1), np.float32), rate)]
    return [preprocessor(image=images[k], text=texts[k], audio=audios[k]) for k in range(2)]
