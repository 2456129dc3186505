"""Decoding and preprocessing of every accepted format, mode and layout."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from app.errors import CorruptInput, PayloadTooLarge, UnsupportedMediaType
from app.inputs.audio import decode_audio
from app.inputs.image import decode_image
from app.inputs.preprocess import Preprocessor, fit_clip
from app.inputs.text import decode_text
from tests import media
from tests.helpers import limits, png_bytes, tiny_spec, wav_bytes

LIMITS = limits()
PRE = Preprocessor(tiny_spec())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_image_format_decodes(fmt: str) -> None:
    im = decode_image(png_bytes((30, 20), fmt=fmt), LIMITS)
    assert im.size == (30, 20)
    assert PRE(image=im).image.shape == (1, 16, 16)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F", "PA"])
def test_every_mode_becomes_the_model_input(mode: str) -> None:
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)).convert(mode)
    t = PRE(image=im).image
    assert t.shape == (1, 16, 16) and t.dtype == torch.float32 and torch.isfinite(t).all()


def test_sixteen_bit_png_keeps_its_range() -> None:
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    t = PRE(image=decode_image(buf.getvalue(), LIMITS)).image
    assert torch.allclose(t, torch.ones_like(t))  # white stays white after normalisation to [-1, 1]


@pytest.mark.parametrize("fmt", ["JPEG", "AVIF", "HEIF", "JXL"])
def test_exif_orientation_is_applied_once(fmt: str) -> None:
    im = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    im.save(buf, format=fmt, exif=exif.tobytes())
    assert decode_image(buf.getvalue(), LIMITS).size == (20, 40)  # libheif rotates, and then EXIF says 1


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("L", (8, 8), c) for c in (255, 0, 0)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    im = decode_image(buf.getvalue(), LIMITS)
    assert np.asarray(im.convert("L")).min() == 255


def test_decompression_bomb_is_refused_before_decoding() -> None:
    im = Image.new("1", (20000, 20000))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(PayloadTooLarge, match="20000x20000"):
        decode_image(buf.getvalue(), LIMITS)


@pytest.mark.parametrize(
    "fmt,subtype",
    [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"), ("WAV", "FLOAT"), ("WAV", "DOUBLE"),
     ("FLAC", "PCM_16"), ("OGG", "VORBIS")],
)
def test_every_audio_encoding_decodes(fmt: str, subtype: str) -> None:
    w = decode_audio(wav_bytes(seconds=0.3, rate=16000, fmt=fmt, subtype=subtype), LIMITS)
    assert w.sample_rate == 16000 and w.samples.dtype == np.float32
    assert np.abs(w.samples).max() == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 2), (48000, 6), (22050, 1)])
def test_audio_is_resampled_and_downmixed(rate: int, channels: int) -> None:
    w = decode_audio(wav_bytes(seconds=0.2, rate=rate, channels=channels), LIMITS)
    assert w.samples.shape == (int(0.2 * rate), channels)
    audio = PRE(audio=w).audio
    assert audio.shape == (2000,)  # tiny model: 8 kHz, 0.25 s
    assert audio[:1600].abs().max() == pytest.approx(0.3, abs=0.05)  # 0.2 s of tone survives resampling
    assert audio[1700:].abs().max() == 0  # then zero padding


def test_long_audio_keeps_the_loudest_window() -> None:
    x = np.zeros(10_000, dtype=np.float32)
    x[6000:6500] = 1.0
    clip = fit_clip(x, 1000)
    assert clip.sum() == 500


def test_audio_limits() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_audio(wav_bytes(seconds=3, rate=8000), limits(max_audio_seconds=2))
    with pytest.raises(UnsupportedMediaType):
        decode_audio(b"not audio at all", LIMITS)
    empty = io.BytesIO()
    sf.write(empty, np.zeros((0, 1)), 8000, format="WAV")
    with pytest.raises(CorruptInput, match="no samples"):
        decode_audio(empty.getvalue(), LIMITS)


def test_truncated_flac_is_refused() -> None:
    data = wav_bytes(seconds=1.0, rate=16000, fmt="FLAC")
    with pytest.raises((CorruptInput, UnsupportedMediaType)):
        decode_audio(data[: len(data) // 2], LIMITS)


def test_text() -> None:
    assert decode_text("  hi ", LIMITS) == "  hi "
    assert decode_text("七".encode(), LIMITS) == "七"
    with pytest.raises(CorruptInput):
        decode_text(b"\xc3\x28", LIMITS)
    with pytest.raises(PayloadTooLarge):
        decode_text("x" * 11, limits(max_text_chars=10))
    ids = PRE(text="hello world, this is longer than thirty-two bytes for sure").text
    assert ids.shape == (32,) and ids.dtype == torch.long


DIGIT, DIGIT_RATE = sf.read("bench/assets/digit.wav", dtype="float32")


@pytest.mark.parametrize("kind", sorted(media.AUDIO))
def test_every_audio_container_and_codec_decodes_to_the_same_sound(kind: str) -> None:
    """The digit clip written by a real encoder in each format decodes to about as long and as loud a sound."""
    wave = decode_audio(media.AUDIO[kind](DIGIT, DIGIT_RATE), LIMITS)
    seconds = wave.samples.shape[0] / wave.sample_rate
    # FFmpeg's CAF demuxer drops an ALAC file's last, partial packet (36 ms here); encoders add a delay
    assert len(DIGIT) / DIGIT_RATE - 0.05 <= seconds <= len(DIGIT) / DIGIT_RATE + 0.15
    rms = float(np.sqrt(np.mean(wave.samples.mean(axis=1) ** 2)))
    assert rms == pytest.approx(float(np.sqrt(np.mean(DIGIT**2))), rel=0.25)


@pytest.mark.parametrize("kind", sorted(media.IMAGES))
def test_every_new_image_format_decodes_to_the_same_picture(kind: str) -> None:
    original = Image.open("bench/assets/digit.png").convert("L")
    im = decode_image(media.IMAGES[kind](original), LIMITS)
    assert im.size == original.size
    diff = np.abs(np.asarray(im.convert("L"), np.int16) - np.asarray(original, np.int16))
    assert diff.max() <= (0 if kind in media.LOSSLESS_IMAGES else 40)


def test_amr_wb_decodes_though_no_encoder_ships() -> None:
    """FFmpeg's wheel has AMR-WB's decoder but no encoder, so the file is written by hand: the storage format's
    magic, then 50 frames of 20 ms (a one-byte header each: frame type, quality bit). Frame type 15 carries no
    speech (silence); type 8 (23.85 kbit/s) carries 60 bytes of speech parameters, random here (noise)."""
    silent = b"#!AMR-WB\n" + bytes([15 << 3 | 4]) * 50
    wave = decode_audio(silent, LIMITS)
    assert wave.sample_rate == 16000 and wave.samples.shape == (16000, 1) and not wave.samples.any()
    rng = np.random.default_rng(0)
    noisy = b"#!AMR-WB\n" + b"".join(bytes([8 << 3 | 4]) + rng.bytes(60) for _ in range(50))
    wave = decode_audio(noisy, LIMITS)
    assert wave.samples.shape == (16000, 1) and 0 < np.abs(wave.samples).max() <= 1
