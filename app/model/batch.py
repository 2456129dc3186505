"""Preprocessed samples -> one batch: each modality stacked over only the samples that have it, plus a mask.

Shared by the service and by training, so both feed the model exactly the same way. `Batch` is what
`FusionClassifier.forward` takes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from app.model.spec import MODALITIES, Modality


@dataclass(frozen=True, slots=True)
class Sample:
    """One preprocessed example: image [C,H,W] float, text [L] int64 token ids, audio [S] float; None when absent."""

    image: torch.Tensor | None = None
    text: torch.Tensor | None = None
    audio: torch.Tensor | None = None

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch of B samples. `mask[b, i]` tells whether sample b has modality MODALITIES[i].

    Each modality tensor holds only the rows of the samples that have it, in batch order;
    `text_padding[r, t]` is True where row r of `text` is padding.
    """

    mask: torch.Tensor
    image: torch.Tensor | None
    text: torch.Tensor | None
    text_padding: torch.Tensor | None
    audio: torch.Tensor | None

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    def to(self, device: torch.device, *, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            mask=move(self.mask),
            image=move(self.image),
            text=move(self.text),
            text_padding=move(self.text_padding),
            audio=move(self.audio),
        )

    def pin_memory(self) -> Batch:
        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory()

        return replace(
            self,
            mask=pin(self.mask),
            image=pin(self.image),
            text=pin(self.text),
            text_padding=pin(self.text_padding),
            audio=pin(self.audio),
        )


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a Batch; texts are right-padded with 0 to the longest text in the batch."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    mask = torch.tensor([[getattr(s, m) is not None for m in MODALITIES] for s in samples], dtype=torch.bool)
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every sample needs at least one modality")
    images = [s.image for s in samples if s.image is not None]
    texts = [s.text for s in samples if s.text is not None]
    audios = [s.audio for s in samples if s.audio is not None]
    text = text_padding = None
    if texts:
        lengths = torch.tensor([len(t) for t in texts])
        text = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True, padding_value=0)
        text_padding = torch.arange(text.shape[1])[None, :] >= lengths[:, None]
    return Batch(
        mask=mask,
        image=torch.stack(images) if images else None,
        text=text,
        text_padding=text_padding,
        audio=torch.stack(audios) if audios else None,
    )
