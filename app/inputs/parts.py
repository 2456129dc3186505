"""One sample's undecoded parts, as a request brings them (no decoding here: the engine decides where that runs)."""
from __future__ import annotations

from dataclasses import dataclass

from app.model.spec import MODALITIES, Modality


@dataclass(frozen=True, slots=True)
class RawInputs:
    """One sample's undecoded parts; None where the modality was not sent."""

    image: bytes | None = None
    text: bytes | str | None = None
    audio: bytes | None = None

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)
