"""How much memory decoding and preprocessing an upload takes, known from its headers before anything is decoded.

The estimates are peaks: the decoded pixels or samples plus the working copies preprocessing makes of them (a mode
conversion, 16-bit and float pixels through float64, a downmix and a resampling of audio). Their constants are
measured by bench/decode_memory.py (bench/results/decode_memory.md) and rounded up. A file whose header cannot be
read, or which is over a decode limit, is estimated at 0: the decoder refuses it before decoding a pixel.
"""
from __future__ import annotations

import soundfile as sf
from PIL import Image

from app.inputs.image import IMAGE_FORMATS
from app.inputs.limits import DecodeLimits
from app.inputs.parts import Buffer, RawInputs, open_buffer
from app.inputs.sniff import sniff_audio

# Peak bytes per pixel of decoding + preprocessing, by the mode the file decodes to (Pillow keeps 8-bit colour at 4
# bytes per pixel; 16-bit and float pixels go through float64; alpha is composited in RGBA).
_BYTES_PER_PIXEL = {
    "1": 6, "L": 6, "P": 6,
    "RGB": 6, "RGBX": 6, "YCbCr": 9, "CMYK": 10, "LAB": 10,
    "LA": 22, "La": 22, "PA": 22, "RGBA": 22, "RGBa": 22,
    "I;16": 22, "I;16L": 22, "I;16B": 22, "I;16N": 22, "I": 23, "F": 23,
}
_WORST_BYTES_PER_PIXEL = max(_BYTES_PER_PIXEL.values())
# A P image with a transparent colour goes through RGBA, like the modes with alpha.
_TRANSPARENT_P = _BYTES_PER_PIXEL["RGBA"]
# Peak bytes of decoded audio: per sample (frame x channel: float32 and its checks), per frame (the downmix and
# its resampling), and per second (a resampled signal at up to 64 kHz in float64 and float32, when upsampling).
_AUDIO_BYTES_PER_SAMPLE = 7
_AUDIO_BYTES_PER_FRAME = 8
_AUDIO_BYTES_PER_SECOND = 1 << 20


def decoded_footprint(raw: RawInputs, limits: DecodeLimits) -> int:
    """Bytes decoding and preprocessing `raw` takes at its peak (its text is negligible)."""
    return image_footprint(raw.image, limits) + audio_footprint(raw.audio, limits)


def image_footprint(data: Buffer | None, limits: DecodeLimits) -> int:
    if data is None:
        return 0
    try:
        with Image.open(open_buffer(data), formats=IMAGE_FORMATS) as im:
            (width, height), mode = im.size, im.mode
            transparent = mode == "P" and "transparency" in im.info
    except Exception:  # noqa: BLE001 - an unreadable header: the decoder refuses the file
        return 0
    pixels = width * height
    if pixels < 1 or pixels > limits.max_image_pixels:
        return 0
    per_pixel = _TRANSPARENT_P if transparent else _BYTES_PER_PIXEL.get(mode, _WORST_BYTES_PER_PIXEL)
    return pixels * per_pixel


def audio_footprint(data: Buffer | None, limits: DecodeLimits) -> int:
    if data is None:
        return 0
    shape = _wav_shape(data)
    if shape is None:
        kind = sniff_audio(data)
        if kind is None:
            return 0  # the decoder refuses it unread
        try:
            with sf.SoundFile(open_buffer(data)) as f:
                shape = f.frames, f.channels, f.samplerate
        except Exception:  # noqa: BLE001 - a container or codec only FFmpeg reads (app.inputs.audio_av)
            return _longest_recording(limits)
    frames, channels, rate = shape
    if frames < 1 or channels < 1 or rate < 1:
        return 0
    if frames * channels > limits.max_audio_samples or frames / rate > limits.max_audio_seconds:
        return 0
    return frames * (channels * _AUDIO_BYTES_PER_SAMPLE + _AUDIO_BYTES_PER_FRAME) + int(
        frames / rate * _AUDIO_BYTES_PER_SECOND
    )


def _longest_recording(limits: DecodeLimits) -> int:
    """Audio that only FFmpeg reads states its length late or only estimates it (MP3, ADTS): held at what its
    decoder lets through, the longest stereo recording at 48 kHz within the limits, which it enforces as it
    decodes."""
    seconds = limits.max_audio_seconds
    frames = min(int(seconds * _RECORDING_RATE), limits.max_audio_samples // _RECORDING_CHANNELS)
    return frames * (_RECORDING_CHANNELS * _AUDIO_BYTES_PER_SAMPLE + _AUDIO_BYTES_PER_FRAME) + int(
        seconds * _AUDIO_BYTES_PER_SECOND
    )


_RECORDING_RATE, _RECORDING_CHANNELS = 48_000, 2


def _wav_shape(data: Buffer) -> tuple[int, int, int] | None:
    """(frames, channels, rate) of a PCM or float WAV, read from its chunks (libsndfile's own open costs far
    more); None for anything else, which libsndfile is asked about."""
    if len(data) < 12 or bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk, size = bytes(data[pos : pos + 4]), int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and size >= 16 and pos + 24 <= len(data):
            tag, channels, rate = (int.from_bytes(data[pos + a : pos + b], "little") for a, b in ((8, 10), (10, 12),
                                                                                                   (12, 16)))
            fmt = tag, channels, rate, int.from_bytes(data[pos + 20 : pos + 22], "little")
        elif chunk == b"data":
            if fmt is None or fmt[0] not in _PLAIN_WAV_TAGS or fmt[3] < 1:
                return None  # compressed, or no format yet
            held = len(data) - pos - 8
            size = held if size in (0, 0xFFFFFFFF) else min(size, held)  # 0 and all ones: "unknown length"
            return size // fmt[3], fmt[1], fmt[2]
        pos += 8 + size + (size & 1)
    return None


_PLAIN_WAV_TAGS = frozenset({1, 3, 6, 7, 0xFFFE})  # PCM, float, A-law, u-law, extensible: frames = bytes / block


def largest_footprint(limits: DecodeLimits) -> int:
    """The footprint of the largest 8-bit colour image and the longest mono audio that `limits` allow, together:
    what the budget keeps in reserve for each decode that may run at once. (Rarer, larger decodes, such as 16-bit
    or alpha images at the pixel limit, need room beyond the reserve.)"""
    image = limits.max_image_pixels * _BYTES_PER_PIXEL["RGB"]
    audio = limits.max_audio_samples * (_AUDIO_BYTES_PER_SAMPLE + _AUDIO_BYTES_PER_FRAME)
    return image + audio + int(limits.max_audio_seconds * _AUDIO_BYTES_PER_SECOND)
