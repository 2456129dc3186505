"""What one request may contain, and the decoded audio type: shared by every decoder in app.inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one request may contain; set from Settings."""

    max_image_pixels: int = 40_000_000
    max_image_frames: int = 1000
    max_audio_seconds: float = 60.0
    max_audio_samples: int = 24_000_000
    max_text_chars: int = 10_000


@dataclass(frozen=True, slots=True)
class Waveform:
    """Decoded audio: samples [frames, channels] float32 in [-1, 1] at `sample_rate` Hz."""

    samples: np.ndarray
    sample_rate: int
