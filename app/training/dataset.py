"""Manifest rows -> preprocessed Samples in memory, through the service's own decoding and preprocessing."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from app.config import Settings
from app.errors import ServiceError
from app.inputs.audio import decode_audio
from app.inputs.image import decode_image
from app.inputs.limits import DecodeLimits
from app.inputs.preprocess import Preprocessor
from app.inputs.text import decode_text
from app.model.batch import Sample
from app.model.spec import MODALITIES
from app.training.manifest import ManifestError, Row

_TRAINING_LIMITS = dataclasses.replace(
    DecodeLimits.from_settings(Settings()), max_image_pixels=100_000_000, max_audio_seconds=600.0,
    max_text_chars=100_000,
)


@dataclass(frozen=True)
class Examples:
    """Preprocessed samples with their label indices."""

    samples: list[Sample]
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.samples)


def load_examples(
    rows: list[Row], labels: tuple[str, ...], preprocessor: Preprocessor, desc: str, workers: int = 2
) -> Examples:
    """Decode and preprocess every row (only the modalities the model has); errors name the manifest line."""
    index = {label: i for i, label in enumerate(labels)}
    wanted = set(preprocessor.spec.modalities)

    def one(row: Row) -> Sample:
        try:
            return preprocessor(
                image=decode_image(row.image.read_bytes(), _TRAINING_LIMITS) if row.image and "image" in wanted else None,
                text=decode_text(row.text, _TRAINING_LIMITS) if row.text and "text" in wanted else None,
                audio=decode_audio(row.audio.read_bytes(), _TRAINING_LIMITS) if row.audio and "audio" in wanted else None,
            )
        except ServiceError as exc:
            raise ManifestError(f"line {row.line}: {exc.message}") from None

    with ThreadPoolExecutor(workers) as pool:
        samples = list(tqdm(pool.map(one, rows), total=len(rows), desc=f"load {desc}", unit="ex", leave=False))
    kept = [(s, index[r.label]) for s, r in zip(samples, rows) if s.modalities]
    return Examples(samples=[s for s, _ in kept], targets=torch.tensor([t for _, t in kept], dtype=torch.long))


def restrict(examples: Examples, keep: tuple[str, ...]) -> Examples:
    """Only the modalities in `keep`; examples left with none are dropped."""
    pairs = [(drop_modalities(s, keep), t) for s, t in zip(examples.samples, examples.targets.tolist())]
    pairs = [(s, t) for s, t in pairs if s.modalities]
    return Examples(samples=[s for s, _ in pairs], targets=torch.tensor([t for _, t in pairs], dtype=torch.long))


def drop_modalities(sample: Sample, keep: tuple[str, ...]) -> Sample:
    """The sample with only the modalities in `keep` (those it has)."""
    return replace(sample, **{m: None for m in MODALITIES if m not in keep})


def modality_dropout(samples: list[Sample], p: float, rng: np.random.Generator) -> list[Sample]:
    """Drop each present modality with probability p, never all of a sample's modalities."""
    out = []
    for s in samples:
        present = s.modalities
        if len(present) < 2 or p <= 0:
            out.append(s)
            continue
        keep = tuple(m for m in present if rng.random() >= p)
        if not keep:
            keep = (present[rng.integers(len(present))],)
        out.append(drop_modalities(s, keep) if keep != present else s)
    return out


def batches(
    examples: Examples, batch_size: int, *, shuffle: bool, rng: np.random.Generator | None = None
) -> list[tuple[list[Sample], torch.Tensor]]:
    """The examples in batches (shuffled with `rng` if asked)."""
    order = rng.permutation(len(examples)) if shuffle and rng is not None else np.arange(len(examples))
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        out.append(([examples.samples[i] for i in idx], examples.targets[torch.as_tensor(idx)]))
    return out

