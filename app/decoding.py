"""Untrusted bytes -> PIL image / waveform / text. The type is decided by content, and every limit is checked
from the headers before any pixel or sample is decoded."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import CorruptInput, PayloadTooLarge, UnsupportedMediaType
from app.inputs.parts import Buffer, open_buffer

# Pillow is only ever asked for these formats, so no other plugin (EPS via Ghostscript, say) can run.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
AUDIO_FORMATS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "W64": "WAV", "FLAC": "FLAC", "OGG": "OGG", "MP3": "MP3"}
# Our own pixel limit (configurable, checked from the header before decoding) replaces Pillow's global one.
Image.MAX_IMAGE_PIXELS = None
# Untrusted files make Pillow warn (corrupt EXIF, truncated chunks); our own checks decide what to refuse, so the
# warnings are only noise in the logs. One process-wide filter: `catch_warnings` per call is not thread-safe.
warnings.filterwarnings("ignore", module=r"(PIL(\..*)?|app\.decoding)$")
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# Every pixel mode those formats decode to; preprocessing.to_mode converts each of them.
IMAGE_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
     "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
)
_AUDIO_SIGNATURES = {b"fLaC": "a FLAC", b"OggS": "an OGG", b"ID3\x03": "an MP3", b"ID3\x04": "an MP3"}
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64
_UTF8_MAX_BYTES_PER_CHAR = 4


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


def decode_image(data: Buffer, limits: DecodeLimits) -> Image.Image:
    """The first frame of a JPEG/PNG/WebP/GIF/BMP/TIFF, EXIF orientation applied, in its original mode."""
    try:
        im = Image.open(open_buffer(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        if (declared := _image_signature(data)) is not None:
            raise CorruptInput(
                f"image: the file starts like a {declared} but is truncated or corrupt; re-encode it and send it again"
            ) from None
        raise UnsupportedMediaType(
            f"image: the file is not a supported image; send one of {', '.join(IMAGE_FORMATS)} "
            "(the type is read from the file's content, not its name)"
        ) from None
    except Image.DecompressionBombError:
        raise PayloadTooLarge(_too_many_pixels(limits)) from None
    except Exception:  # noqa: BLE001 - any failure to parse untrusted bytes is the caller's corrupt file
        raise CorruptInput("image: the file is corrupt or truncated; re-encode it and send it again") from None
    width, height = im.size
    if width < 1 or height < 1:
        raise CorruptInput("image: the file declares an empty (0-pixel) image")
    if width * height > limits.max_image_pixels:
        raise PayloadTooLarge(_too_many_pixels(limits, width, height))
    try:
        too_many_frames = _has_more_frames_than(im, limits.max_image_frames)
        if not too_many_frames:
            im.seek(0)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
    except Image.DecompressionBombError:
        raise PayloadTooLarge(_too_many_pixels(limits)) from None
    except Exception:  # noqa: BLE001 - see above
        raise CorruptInput(
            f"image: the {im.format} file is corrupt or truncated and could not be decoded; re-encode and send it again"
        ) from None
    if too_many_frames:
        raise PayloadTooLarge(
            f"image: the file holds more than {limits.max_image_frames:,} frames; send a still image (or one frame)"
        )
    if im.mode not in IMAGE_MODES:
        raise UnsupportedMediaType(f"image: pixel mode {im.mode!r} is not supported; send grey, RGB(A) or palette")
    return im


def _has_more_frames_than(im: Image.Image, limit: int) -> bool:
    """Whether an image holds more than `limit` frames, found without decoding a pixel or walking past the limit."""
    if im.format in ("PNG", "WEBP"):
        return int(getattr(im, "n_frames", 1)) > limit  # declared in a header (APNG's acTL, WebP's ANIM)
    if im.format == "GIF":
        # GIF declares no count; Pillow's own n_frames walks the frame headers like this, but to the end of the file.
        try:
            for frame in range(1, limit + 1):
                im._seek(frame, False)  # type: ignore[attr-defined]  # noqa: SLF001 - headers only, no decoding
        except EOFError:
            return False
        return True
    try:
        im.seek(limit)  # TIFF: follows the directory chain up to frame `limit`; single-frame formats raise at once
    except EOFError:
        return False
    return True


def _image_signature(data: Buffer) -> str | None:
    """The accepted format whose signature `data` starts with, if any."""
    data = bytes(data[:12])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _IMAGE_SIGNATURES if data.startswith(magic)), None)


def _too_many_pixels(limits: DecodeLimits, width: int | None = None, height: int | None = None) -> str:
    size = f" is {width}x{height} pixels and" if width else ""
    return f"image:{size} exceeds the limit of {limits.max_image_pixels:,} pixels; downscale it before sending"


def decode_audio(data: Buffer, limits: DecodeLimits) -> Waveform:
    """Decode WAV (any PCM/float width), FLAC, OGG or MP3; the declared rate, channels, length and samples are
    checked before decoding."""
    _check_wav(data)
    try:
        f = sf.SoundFile(open_buffer(data))
    except Exception:  # noqa: BLE001 - libsndfile raises several types for unknown content
        if (magic := bytes(data[:4])) in _AUDIO_SIGNATURES:
            raise CorruptInput(
                f"audio: the file starts like {_AUDIO_SIGNATURES[magic]} but is truncated or corrupt; "
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


def _is_wav(data: Buffer) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def _check_rate_and_channels(rate: int, channels: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise CorruptInput(
            f"audio: the file declares a sample rate of {rate} Hz; "
            f"it must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise CorruptInput(f"audio: the file declares {channels} channels; 1 to {MAX_CHANNELS} are accepted")


def _check_wav(data: Buffer) -> None:
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


def decode_text(data: Buffer | str, limits: DecodeLimits) -> str:
    """Strict UTF-8 text; NUL characters and empty or whitespace-only texts are refused."""
    if not isinstance(data, str):
        if len(data) > _UTF8_MAX_BYTES_PER_CHAR * limits.max_text_chars:  # over the limit whatever it decodes to
            raise PayloadTooLarge(f"text: {len(data):,} bytes; the limit is {limits.max_text_chars:,} characters")
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptInput(f"text: not valid UTF-8 (bad byte at offset {exc.start}); send UTF-8 text") from None
    else:
        text = data
    if len(text) > limits.max_text_chars:
        raise PayloadTooLarge(f"text: {len(text):,} characters; the limit is {limits.max_text_chars:,}")
    if "\x00" in text:
        raise CorruptInput("text: contains NUL characters; remove them")
    if not text.strip():
        raise CorruptInput("text: empty or only whitespace; send some text, or leave the field out")
    return text
