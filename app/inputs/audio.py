"""Untrusted bytes -> waveform. The type is decided by content, and the rate, channel, length and sample limits
are checked from the headers before any sample is decoded."""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from app.errors import CorruptInput, PayloadTooLarge, UnsupportedMediaType
from app.inputs.limits import DecodeLimits, Waveform

AUDIO_FORMATS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "W64": "WAV", "FLAC": "FLAC", "OGG": "OGG", "MP3": "MP3"}
_AUDIO_SIGNATURES = {b"fLaC": "a FLAC", b"OggS": "an OGG", b"ID3\x03": "an MP3", b"ID3\x04": "an MP3"}
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64


def decode_audio(data: bytes, limits: DecodeLimits) -> Waveform:
    """Decode WAV (any PCM/float width), FLAC, OGG or MP3; the declared rate, channels, length and samples are
    checked before decoding."""
    _check_wav(data)
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - libsndfile raises several types for unknown content
        if data[:4] in _AUDIO_SIGNATURES:
            raise CorruptInput(
                f"audio: the file starts like {_AUDIO_SIGNATURES[data[:4]]} but is truncated or corrupt; "
                "re-encode it and send it again"
            ) from None
        if _is_wav(data):
            raise UnsupportedMediaType(
                "audio: the content is a WAV file with an unsupported encoding or a broken header; "
                "send PCM, float, u-law, A-law or ADPCM WAV, FLAC, OGG or MP3"
            ) from None
        raise UnsupportedMediaType(
            "audio: the file is not a supported audio file; send WAV, FLAC, OGG or MP3 "
            "(the type is read from the file's content, not its name)"
        ) from None
    with f:
        if f.format not in AUDIO_FORMATS:
            raise UnsupportedMediaType(f"audio: {f.format} files are not accepted; send WAV, FLAC, OGG or MP3")
        _check_rate_and_channels(f.samplerate, f.channels)
        if f.frames <= 0:
            raise CorruptInput("audio: the file holds no samples")
        seconds = f.frames / f.samplerate
        if seconds > limits.max_audio_seconds:
            raise PayloadTooLarge(
                f"audio: the file is {seconds:.1f} s long; the limit is {limits.max_audio_seconds:g} s, trim it first"
            )
        if f.frames * f.channels > limits.max_audio_samples:
            raise PayloadTooLarge(
                f"audio: {f.channels} channels of {seconds:.1f} s at {f.samplerate} Hz would decode to "
                f"{f.frames * f.channels:,} samples; the limit is {limits.max_audio_samples:,}: "
                "downmix or resample it first"
            )
        try:
            samples = f.read(frames=f.frames, dtype="float32", always_2d=True)
        except Exception:  # noqa: BLE001 - truncated or corrupt payload
            raise CorruptInput("audio: the file is corrupt or truncated and could not be decoded") from None
        rate, declared = f.samplerate, f.frames
    if samples.shape[0] < declared:
        raise CorruptInput(
            f"audio: the file is truncated: it declares {declared} samples per channel but holds {samples.shape[0]}"
        )
    if not np.isfinite(samples).all():
        raise CorruptInput("audio: the file holds NaN or infinite samples")
    return Waveform(samples=samples, sample_rate=rate)


def _is_wav(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def _check_rate_and_channels(rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise CorruptInput(
            f"audio: the file declares a sample rate of {rate} Hz; "
            f"it must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise CorruptInput(f"audio: the file declares {channels} channels; 1 to {MAX_CHANNELS} are accepted")


def _check_wav(data: bytes) -> None:
    """A RIFF/WAVE's header, before libsndfile reads it: libsndfile takes a zero rate or channel count for an
    unknown format, and quietly shortens a data chunk that claims more bytes than the file has."""
    if not _is_wav(data):
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and size >= 16 and pos + 24 <= len(data):
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
            _check_rate_and_channels(rate, channels)
        elif chunk == b"data":
            held = len(data) - (pos + 8)
            # 0 and 0xFFFFFFFF mean "unknown length" (written by streaming tools): nothing to compare.
            if size not in (0, 0xFFFFFFFF) and size > held:
                raise CorruptInput(
                    f"audio: the WAV file is truncated: its data chunk declares {size:,} bytes but holds {held:,}"
                )
            return
        pos += 8 + size + (size & 1)
