"""Manifest rows -> preprocessed Samples, read from disk as they are needed, through the service's own decoding
and preprocessing (and, for training, the augmentation first).

Nothing holds every example in memory: a DataLoader decodes each batch's files in worker processes, so a data set
larger than RAM trains. Augmentation is seeded per (epoch, example), so a run is the same whatever the worker count.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from app.config import Settings
from app.errors import ServiceError
from app.inputs.audio import decode_audio
from app.inputs.image import decode_image
from app.inputs.limits import DecodeLimits
from app.inputs.preprocess import Preprocessor
from app.inputs.text import decode_text
from app.model.batch import Sample
from app.model.spec import MODALITIES
from app.training.augment import Augmentation
from app.training.manifest import ManifestError, Row

_TRAINING_LIMITS = dataclasses.replace(
    DecodeLimits.from_settings(Settings()), max_image_pixels=100_000_000, max_audio_seconds=600.0,
    max_text_chars=100_000,
)


class ManifestDataset(Dataset):
    """The rows that have at least one of the model's modalities, as (Sample, label index) pairs."""

    def __init__(
        self,
        rows: list[Row],
        labels: tuple[str, ...],
        preprocessor: Preprocessor,
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        self.wanted = tuple(m for m in MODALITIES if m in preprocessor.spec.modalities)
        self.rows = [r for r in rows if any(m in self.wanted for m in r.modalities)]
        self.index = {label: i for i, label in enumerate(labels)}
        self.targets = torch.tensor([self.index[r.label] for r in self.rows], dtype=torch.long)
        self.preprocessor = preprocessor
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Sample, int]:
        row = self.rows[i]
        try:
            image = decode_image(row.image.read_bytes(), _TRAINING_LIMITS) if row.image and "image" in self.wanted else None
            text = decode_text(row.text, _TRAINING_LIMITS) if row.text and "text" in self.wanted else None
            audio = decode_audio(row.audio.read_bytes(), _TRAINING_LIMITS) if row.audio and "audio" in self.wanted else None
        except ServiceError as exc:
            raise ManifestError(f"line {row.line}: {exc.message}") from None
        if self.augmentation is not None:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.epoch, i)))
            image, text, audio = self.augmentation(image, text, audio, rng)
        return self.preprocessor(image=image, text=text, audio=audio), int(self.targets[i])


def collate_pairs(items: list[tuple[Sample, int]]) -> tuple[list[Sample], torch.Tensor]:
    return [s for s, _ in items], torch.tensor([t for _, t in items], dtype=torch.long)


def loader(
    dataset: ManifestDataset, batch_size: int, workers: int, *, shuffle: bool = False, epoch: int = 0
) -> DataLoader:
    """Batches of (samples, targets); shuffled for `epoch` (seeded by the dataset's seed) when asked."""
    dataset.epoch = epoch
    if shuffle:
        order = np.random.default_rng(np.random.SeedSequence(dataset.seed, spawn_key=(1_000_000, epoch)))
        indices = order.permutation(len(dataset))
    else:
        indices = np.arange(len(dataset))
    batch_indices = [indices[i : i + batch_size].tolist() for i in range(0, len(indices), batch_size)]
    return DataLoader(dataset, batch_sampler=batch_indices, num_workers=workers, collate_fn=collate_pairs,
                      worker_init_fn=_one_thread, prefetch_factor=4 if workers else None)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a loader worker's torch ops are small; threads would fight the training process


@dataclass(frozen=True)
class Examples:
    """Preprocessed samples in memory with their label indices (small evaluation sets, benchmarks)."""

    samples: list[Sample]
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.samples)

    def batches(self, batch_size: int) -> Iterator[tuple[list[Sample], torch.Tensor]]:
        for start in range(0, len(self.samples), batch_size):
            yield self.samples[start : start + batch_size], self.targets[start : start + batch_size]


def load_examples(rows: list[Row], labels: tuple[str, ...], preprocessor: Preprocessor, workers: int = 0) -> Examples:
    """Every row decoded and preprocessed into memory; errors name the manifest line."""
    dataset = ManifestDataset(rows, labels, preprocessor)
    samples: list[Sample] = []
    for batch, _ in loader(dataset, 256, workers):
        samples += batch
    return Examples(samples=samples, targets=dataset.targets)


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
