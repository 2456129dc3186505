"""Training-time augmentation of decoded inputs, before the model's own preprocessing: one flag per setting
(`--aug-<modality>-<name>`), on by default, recorded in config.json (`augmentation`) and the card.

Augmentation changes what a training example looks like, never how an input is preprocessed: any normalisation
lives in app/preprocessing.py, which serving runs identically.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from app.errors import SettingError, UsageError
from app.inputs.limits import Waveform
from app.training.augment_audio import AudioAugment, augment_audio
from app.training.augment_image import ImageAugment, augment_image
from app.training.augment_text import TextAugment, augment_text

_KINDS: dict[str, type] = {"image": ImageAugment, "text": TextAugment, "audio": AudioAugment}


@dataclass(frozen=True)
class Augmentation:
    """The three modalities' settings; calling it augments one example's decoded inputs."""

    image: ImageAugment = ImageAugment()
    text: TextAugment = TextAugment()
    audio: AudioAugment = AudioAugment()

    def __call__(
        self, image: Image.Image | None, text: str | None, audio: Waveform | None, rng: np.random.Generator
    ) -> tuple[Image.Image | None, str | None, Waveform | None]:
        # One child stream per modality, so one modality's settings do not shift another's randomness.
        image_rng, text_rng, audio_rng = rng.spawn(3)
        return (
            None if image is None else augment_image(image, self.image, image_rng),
            None if text is None else augment_text(text, self.text, text_rng),
            None if audio is None else augment_audio(audio, self.audio, audio_rng),
        )

    def record(self) -> dict[str, bool | int | float | str]:
        """Flat `<modality>_<name>` settings, as config.json and the card record them."""
        return {f"{m}_{k}": v for m in _KINDS for k, v in dataclasses.asdict(getattr(self, m)).items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--no-augment` and one flag per setting."""
    group = parser.add_argument_group("augmentation (training only; on by default)")
    group.add_argument("--no-augment", action="store_true", help="train on the examples as they are")
    for modality, kind in _KINDS.items():
        for f in dataclasses.fields(kind):
            group.add_argument(
                f"--aug-{modality}-{f.name.replace('_', '-')}", dest=f"aug_{modality}_{f.name}",
                type=type(f.default), default=None,
                help=f"{f.metadata.get('help', '')} (default: {f.default})",
            )


def from_settings(settings: dict[str, Any], enabled: bool = True) -> Augmentation | None:
    """Build from flat `<modality>_<name>` settings (missing ones take their defaults); None when disabled.
    A bad value raises UsageError naming its flag."""
    if not enabled:
        return None
    parts: dict[str, Any] = {}
    for modality, kind in _KINDS.items():
        given = {f.name: settings[f"{modality}_{f.name}"] for f in dataclasses.fields(kind)
                 if settings.get(f"{modality}_{f.name}") is not None}
        try:
            parts[modality] = kind(**given)
        except SettingError as exc:
            flag = f"--aug-{modality}-{exc.setting.replace('_', '-')}"
            raise UsageError(f"{flag} {given.get(exc.setting, getattr(kind(), exc.setting))}: {exc.message}") from None
    return Augmentation(**parts)
