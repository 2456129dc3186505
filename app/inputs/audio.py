"""Untrusted bytes -> waveform. The container is sniffed from the content; libsndfile decodes what it does best
(WAV, W64, RF64, FLAC, OGG), FFmpeg's libraries (app.inputs.audio_av) the rest. The rate, channel, length and
sample limits are checked from the headers before any sample is decoded, and again while decoding where a container
does not declare them."""
from __future__ import annotations

import numpy as np
import soundfile as sf

from app.errors import CorruptInput, PayloadTooLarge, UnsupportedMediaType
from app.inputs.audio_av import decode_with_av
from app.inputs.limits import DecodeLimits, Waveform, check_rate_and_channels
from app.inputs.parts import Buffer, open_buffer
from app.inputs.sniff import AIFF, AUDIO_NAMES, WAV, AudioType, sniff_audio

# libsndfile's names for the containers it may read (it is never asked to read AIFF, AU, VOC, ...).
_SOUNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG"})
# WAV codecs (format tags) whose length libsndfile knows exactly: PCM, MS ADPCM, float, A-law, u-law, IMA ADPCM,
# GSM 6.10, WAVE_FORMAT_EXTENSIBLE (PCM or float inside). Others (MP3, AAC, ...) go to FFmpeg's WAV demuxer.
_SOUNDFILE_WAV_CODECS = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0xFFFE})


def decode_audio(data: Buffer, limits: DecodeLimits) -> Waveform:
    """Decode any accepted container and codec (see app.inputs.sniff) to float32 samples."""
    kind = sniff_audio(data)
    if kind is None:
        raise UnsupportedMediaType(
            f"audio: the file is not a supported audio file; send {AUDIO_NAMES} "
            "(the type is read from the file's content, not its name)"
        )
    use_soundfile = kind.soundfile
    if kind is WAV:
        data, codec = _check_wav(data)
        use_soundfile = codec is None or codec in _SOUNDFILE_WAV_CODECS
    elif kind is AIFF:
        data = _fill_in_aiff_lengths(data)
    if use_soundfile:
        try:
            f = sf.SoundFile(open_buffer(data))
        except Exception:  # noqa: BLE001 - libsndfile raises several types for what it cannot read
            f = None  # a codec or a header libsndfile does not take: FFmpeg's demuxer for the same container
        if f is not None:
            return _decode_with_soundfile(f, kind, limits)
    return decode_with_av(data, kind, limits)


def _decode_with_soundfile(f: sf.SoundFile, kind: AudioType, limits: DecodeLimits) -> Waveform:
    with f:
        if f.format not in _SOUNDFILE_FORMATS:  # content that libsndfile reads as another container than sniffed
            raise CorruptInput(f"audio: the file starts like {kind.label} but is not one; re-encode it")
        check_rate_and_channels(f.samplerate, f.channels)
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


def _check_wav(data: bytes) -> tuple[bytes, int | None]:
    """A RIFF/WAVE's header, before libsndfile reads it: libsndfile takes a zero rate or channel count for an
    unknown format, and quietly shortens a data chunk that claims more bytes than the file has. A data chunk of
    unknown length (0 or 0xFFFFFFFF, written by a tool streaming to a pipe) is given the length it holds.
    Returns the data, so amended, and the codec's format tag."""
    if data[:4] != b"RIFF":
        return data, None  # RF64/BW64: their sizes live in a ds64 chunk that libsndfile and FFmpeg check themselves
    pos, codec = 12, None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and size >= 16 and pos + 24 <= len(data):
            codec = int.from_bytes(data[pos + 8 : pos + 10], "little")
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
            check_rate_and_channels(rate, channels)
        elif chunk == b"data":
            held = len(data) - (pos + 8)
            if size in (0, 0xFFFFFFFF):  # unknown length: what follows the header is the data
                fixed = bytearray(data)
                fixed[4:8] = min(len(data) - 8, 0xFFFFFFFF).to_bytes(4, "little")
                fixed[pos + 4 : pos + 8] = min(held, 0xFFFFFFFF).to_bytes(4, "little")
                return bytes(fixed), codec
            if size > held:
                raise CorruptInput(
                    f"audio: the WAV file is truncated: its data chunk declares {size:,} bytes but holds {held:,}"
                )
            return data, codec
        pos += 8 + size + (size & 1)
    return data, codec


def _fill_in_aiff_lengths(data: bytes) -> bytes:
    """An AIFF written to a pipe leaves its FORM and SSND sizes 0 (unknown): give them the length the file holds,
    as for WAV. FFmpeg's demuxer refuses a FORM of size 0 and reads nothing from an SSND of size 0."""
    if data[4:8] not in (b"\0\0\0\0", b"\xff\xff\xff\xff"):
        return data
    fixed = bytearray(data)
    fixed[4:8] = min(len(data) - 8, 0xFFFFFFFF).to_bytes(4, "big")
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "big")
        if chunk == b"SSND":
            if size in (0, 0xFFFFFFFF):
                fixed[pos + 4 : pos + 8] = min(len(data) - pos - 8, 0xFFFFFFFF).to_bytes(4, "big")
            break
        pos += 8 + size + (size & 1)
    return bytes(fixed)
