"""Property tests: random bytes and mutated valid files never make a decoder (or the multipart reader) raise
anything but an InvalidInput subclass (a 4xx), and whatever decodes stays within the limits and preprocesses to
finite model inputs (no 5xx later in the pipeline either)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import InvalidInput
from app.http.multipart import FormLimits, read_form
from app.inputs.audio import decode_audio
from app.inputs.image import decode_image
from app.inputs.limits import Waveform
from app.inputs.preprocess import Preprocessor
from app.inputs.text import decode_text
from app.model.spec import ImageSpec
from tests import hostile, media
from tests.helpers import limits, tiny_spec, wav_bytes

LIMITS = limits(max_image_pixels=4_000_000, max_image_frames=50, max_audio_seconds=5, max_audio_samples=400_000)
GREY = Preprocessor(tiny_spec())
COLOUR = Preprocessor(
    tiny_spec().model_copy(update={"image": ImageSpec(size=16, channels=3, width=4, mean=(0.5,) * 3, std=(0.5,) * 3)})
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IMAGE_SEEDS = [
    hostile.image_file(hostile.noise_image((24, 16)), "PNG"),
    hostile.image_file(hostile.noise_image((24, 16)), "JPEG"),
    hostile.image_file(hostile.noise_image((24, 16), "P"), "GIF"),
    hostile.image_file(hostile.noise_image((24, 16)), "WEBP"),
    hostile.image_file(hostile.noise_image((24, 16)), "BMP"),
    hostile.image_file(hostile.noise_image((24, 16)), "TIFF"),
    hostile.image_file(hostile.noise_image((24, 16), "CMYK"), "TIFF", compression="tiff_lzw"),
    hostile.image_file(hostile.noise_image((24, 16), "RGBA"), "PNG"),
    hostile.animation("GIF", 4),
    hostile.animation("PNG", 4),
    *(make(hostile.noise_image((24, 16))) for make in media.IMAGES.values()),  # AVIF, HEIC, JPEG XL
    hostile.animation("AVIF", 3),
]
AUDIO_SEEDS = [
    wav_bytes(seconds=0.1, rate=8000),
    wav_bytes(seconds=0.1, rate=16000, channels=2, subtype="FLOAT"),
    hostile.EXOTIC_AUDIO["wav-ima-adpcm"](),
    hostile.audio_file(hostile.tone(0.2, 16000), 16000, "FLAC"),
    hostile.audio_file(hostile.tone(0.2, 16000), 16000, "OGG", "VORBIS"),
    hostile.EXOTIC_AUDIO["mp3"](),
    # every container and codec decoded through FFmpeg, 0.2 s each
    *(make(hostile.tone(0.2, 16000)[:, 0], 16000) for make in media.AUDIO.values()),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed file with a few random edits: flipped bytes, extreme 32-bit fields (lying sizes), cuts, insertions."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["flip", "field", "cut", "insert", "delete"]))
        if edit == "flip":
            data[at] = draw(st.integers(0, 255))
        elif edit == "field":
            value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            data[at : at + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
        elif edit == "cut":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def check_image(data: bytes) -> None:
    try:
        im = decode_image(data, LIMITS)
    except InvalidInput:
        return
    assert im.width * im.height <= LIMITS.max_image_pixels
    for pre in (GREY, COLOUR):
        assert torch.isfinite(pre(image=im).image).all()


def check_audio(data: bytes) -> None:
    try:
        wave = decode_audio(data, LIMITS)
    except InvalidInput:
        return
    assert isinstance(wave, Waveform)
    frames, channels = wave.samples.shape
    assert frames * channels <= LIMITS.max_audio_samples and frames / wave.sample_rate <= LIMITS.max_audio_seconds
    assert torch.isfinite(GREY(audio=wave).audio).all()


def check_text(data: bytes) -> None:
    try:
        text = decode_text(data, LIMITS)
    except InvalidInput:
        return
    assert 1 <= GREY(text=text).text.numel() <= 32


CHECKS: dict[str, Callable[[bytes], None]] = {"image": check_image, "audio": check_audio, "text": check_text}


@FUZZ
@given(data=st.binary(max_size=2048), kind=st.sampled_from(sorted(CHECKS)))
def test_random_bytes(data: bytes, kind: str) -> None:
    CHECKS[kind](data)


@FUZZ
@given(data=mutated(IMAGE_SEEDS))
def test_mutated_images(data: bytes) -> None:
    check_image(data)


@FUZZ
@given(data=mutated(AUDIO_SEEDS))
def test_mutated_audio(data: bytes) -> None:
    check_audio(data)


@settings(FUZZ, max_examples=1000)
@given(data=mutated(AUDIO_SEEDS[6:]))
def test_mutated_audio_through_ffmpeg(data: bytes) -> None:
    """More examples for the formats FFmpeg's demuxers and decoders read: the larger attack surface."""
    check_audio(data)


@FUZZ
@given(text=st.text(max_size=300))
def test_any_unicode_text(text: str) -> None:
    check_text(text.encode("utf-8", "surrogatepass"))


FORM = (
    b'--xyz\r\nContent-Disposition: form-data; name="text"\r\n\r\nhello\r\n'
    b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    b"\x89PNG....\r\n--xyz--\r\n"
)


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


@FUZZ
@given(body=st.one_of(mutated([FORM]), st.binary(max_size=512)), chunk=st.integers(1, 700))
def test_multipart_reader(body: bytes, chunk: int) -> None:
    limits = FormLimits(max_body_bytes=4096, max_part_bytes=1024)
    content_type, fields = "multipart/form-data; boundary=xyz", ("image", "text", "audio")
    try:
        parts = asyncio.run(read_form(content_type, None, _chunks(body, chunk), fields, limits))
    except InvalidInput:
        return
    assert set(parts) <= {"image", "text", "audio"}
    assert all(len(p.data) <= limits.max_part_bytes for p in parts.values())
