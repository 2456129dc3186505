"""Decoding of untrusted bytes into images, text and waveforms, with every limit enforced while decoding; shared
by serving and training."""
from __future__ import annotations

from app.inputs.audio import decode_audio
from app.inputs.image import IMAGE_MODES, decode_image
from app.inputs.limits import DecodeLimits, Waveform
from app.inputs.text import decode_text

__all__ = ["IMAGE_MODES", "DecodeLimits", "Waveform", "decode_audio", "decode_image", "decode_text"]
