"""What one request may contain, and the decoded audio type: shared by every decoder in app.inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.config import Settings
from app.errors import CorruptInput

MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one request may contain (`from_settings`: the service's limits). `max_decode_seconds`: CPU seconds one
    audio file may take to decode, far above any file within the other limits; it stops a decoder that a crafted
    file keeps busy."""

    max_image_pixels: int
    max_image_frames: int
    max_audio_seconds: float
    max_audio_samples: int
    max_text_chars: int
    max_decode_seconds: float

    @classmethod
    def from_settings(cls, s: Settings) -> DecodeLimits:
        return cls(
            max_image_pixels=s.max_image_pixels,
            max_image_frames=s.max_image_frames,
            max_audio_seconds=s.max_audio_seconds,
            max_audio_samples=s.max_audio_samples,
            max_text_chars=s.max_text_chars,
            max_decode_seconds=s.max_decode_seconds,
        )


@dataclass(frozen=True, slots=True)
class Waveform:
    """Decoded audio: samples [frames, channels] float32 in [-1, 1] at `sample_rate` Hz."""

    samples: np.ndarray
    sample_rate: int


def check_rate_and_channels(rate: int, channels: int) -> None:
    """CorruptInput unless the declared rate and channel count are within what any decoder accepts."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise CorruptInput(
            f"audio: the file declares a sample rate of {rate} Hz; "
            f"it must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise CorruptInput(f"audio: the file declares {channels} channels; 1 to {MAX_CHANNELS} are accepted")
