"""Hostile and odd inputs at the decoders: every one is refused with the right InvalidInput (or decoded and usable
by both a grey and a colour model), limits are checked from headers before any pixel or sample is decoded."""
from __future__ import annotations

import io

import numpy as np
import pillow_heif.as_plugin
import pytest
import torch
from PIL import AvifImagePlugin, Image, ImageFile
from pillow_jxl import JpegXLImagePlugin

from app.errors import CorruptInput, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.inputs import audio_av
from app.inputs.audio import decode_audio
from app.inputs.image import IMAGE_MODES, decode_image
from app.inputs.preprocess import Preprocessor
from app.inputs.text import decode_text
from app.model.spec import ImageSpec
from tests import hostile, media
from tests.helpers import limits, tiny_spec

LIMITS = limits()
GREY = Preprocessor(tiny_spec())
COLOUR = Preprocessor(
    tiny_spec().model_copy(update={"image": ImageSpec(size=16, channels=3, width=4, mean=(0.5,) * 3, std=(0.5,) * 3)})
)


@pytest.fixture()
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixels fails the test (decode_image would report it as a corrupt file, not 413)."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    # the plugins that decode in their own load(), or (JPEG XL) while opening the file
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "load", refuse)
    monkeypatch.setattr(pillow_heif.as_plugin.HeifImageFile, "load", refuse)
    monkeypatch.setattr(JpegXLImagePlugin.JXLImageFile, "_open", refuse)


@pytest.mark.parametrize("kind", sorted(hostile.IMAGE_BOMBS))
def test_decompression_bombs_are_refused_from_the_header(kind: str, no_pixel_decoding: None) -> None:
    data = hostile.IMAGE_BOMBS[kind]()
    assert len(data) < 100_000
    with pytest.raises(PayloadTooLarge, match=r"\d+x\d+ pixels and exceeds the limit of 40,000,000"):
        decode_image(data, LIMITS)


@pytest.mark.parametrize("kind", ["AVIF", "HEIF", "JXL"])
def test_plugin_formats_are_checked_against_the_pixel_limit_before_decoding(kind: str, no_pixel_decoding: None) -> None:
    """A HEIC bomb needs a genuinely large picture (libheif reads the size from the HEVC stream), so each plugin
    format is checked with a 64 x 64 image against a 1 000-pixel limit: refused from the header alone."""
    data = {"AVIF": media.IMAGES["avif"], "HEIF": media.IMAGES["heic"], "JXL": media.IMAGES["jxl"]}[kind](
        hostile.noise_image((64, 64))
    )
    with pytest.raises(PayloadTooLarge, match="64x64 pixels and exceeds the limit of 1,000"):
        decode_image(data, limits(max_image_pixels=1000))


@pytest.mark.parametrize("kind", sorted(hostile.BROKEN_IMAGES))
def test_truncated_or_corrupt_plugin_images_are_422(kind: str) -> None:
    with pytest.raises(CorruptInput, match="corrupt|truncated"):
        decode_image(hostile.BROKEN_IMAGES[kind](), LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"])
def test_animations_with_too_many_frames_are_refused(fmt: str) -> None:
    eight = limits(max_image_frames=8)
    assert decode_image(hostile.animation(fmt, 8), eight).size == (4, 4)  # at the limit: its first frame
    with pytest.raises(PayloadTooLarge, match="more than 8 frames"):
        decode_image(hostile.animation(fmt, 9), eight)


def test_a_gif_with_thousands_of_frames_is_refused_without_decoding_them(no_pixel_decoding: None) -> None:
    with pytest.raises(PayloadTooLarge, match="more than 1,000 frames"):
        decode_image(hostile.animation("GIF", 3000), LIMITS)


@pytest.mark.parametrize("kind", sorted(hostile.FOREIGN_IMAGES))
def test_formats_we_do_not_accept_are_415(kind: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="JPEG, PNG, WEBP, GIF, BMP, TIFF, AVIF, HEIF, JXL|animated JPEG XL"):
        decode_image(hostile.FOREIGN_IMAGES[kind](), LIMITS)


def test_eps_is_refused_although_pillow_could_open_it() -> None:
    eps = hostile.eps_file()
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # unrestricted, Pillow would (and load() runs Ghostscript)
    with pytest.raises(UnsupportedMediaType):
        decode_image(eps, LIMITS)


@pytest.mark.parametrize("kind", sorted(hostile.EXOTIC_IMAGES))
def test_exotic_modes_decode_for_grey_and_colour_models(kind: str) -> None:
    im = decode_image(hostile.EXOTIC_IMAGES[kind](), LIMITS)
    assert im.mode in IMAGE_MODES
    for pre, channels in ((GREY, 1), (COLOUR, 3)):
        t = pre(image=im).image
        assert t.shape == (channels, 16, 16) and torch.isfinite(t).all()


@pytest.mark.parametrize("mode", sorted(IMAGE_MODES))
def test_every_accepted_mode_converts_to_both_model_inputs(mode: str) -> None:
    im = Image.new(mode, (5, 3))
    assert GREY(image=im).image.shape == (1, 16, 16)
    assert COLOUR(image=im).image.shape == (3, 16, 16)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
@pytest.mark.parametrize("keep", [0.5, 0.1, 20])
def test_truncated_images_are_422(fmt: str, keep: float) -> None:
    data = hostile.image_file(hostile.noise_image(), fmt)
    cut = data[: int(len(data) * keep)] if keep < 1 else data[: int(keep)]
    with pytest.raises(CorruptInput, match="corrupt|truncated"):
        decode_image(cut, LIMITS)


def test_a_corrupted_png_is_422() -> None:
    data = bytearray(hostile.image_file(hostile.noise_image(), "PNG"))
    data[200:260] = bytes(60)  # inside the compressed pixels: the CRC no longer matches
    with pytest.raises(CorruptInput):
        decode_image(bytes(data), LIMITS)


@pytest.mark.parametrize("kind", sorted(hostile.EXOTIC_AUDIO))
def test_exotic_audio_encodings_decode(kind: str) -> None:
    wave = decode_audio(hostile.EXOTIC_AUDIO[kind](), LIMITS)
    audio = GREY(audio=wave).audio
    assert audio.shape == (2000,) and torch.isfinite(audio).all() and audio.abs().max() > 0.1


@pytest.mark.parametrize("kind", sorted(hostile.FOREIGN_AUDIO))
def test_audio_formats_we_do_not_accept_are_415(kind: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_audio(hostile.FOREIGN_AUDIO[kind](), LIMITS)


LYING_MESSAGES = {
    "rate-0": "sample rate of 0 Hz",
    "rate-1": "sample rate of 1 Hz",
    "rate-huge": "sample rate of 4000000000 Hz",
    "channels-0": "0 channels",
    "channels-65": "65 channels",
    "data-size-4gb": "declares 4,294,967,280 bytes",
    "zero-samples": "no samples",
    "truncated-wav": "truncated",
    "truncated-flac": "truncated",
    "truncated-ogg": "truncated",
    "header-only-wav": "truncated",
    "header-only-flac": "truncated",
}


@pytest.mark.parametrize("kind,message", sorted(LYING_MESSAGES.items()))
def test_audio_whose_header_lies_or_that_is_cut_short_is_422(kind: str, message: str) -> None:
    with pytest.raises(CorruptInput, match=message):
        decode_audio(hostile.LYING_AUDIO[kind](), LIMITS)


@pytest.mark.parametrize("kind", sorted(set(hostile.LYING_AUDIO) - set(LYING_MESSAGES)))
def test_truncated_mislabelled_or_corrupt_containers_are_422(kind: str) -> None:
    with pytest.raises(CorruptInput, match="truncated|corrupt|no samples"):
        decode_audio(hostile.LYING_AUDIO[kind](), LIMITS)


@pytest.mark.parametrize("kind", sorted(hostile.DECODED_AS_NOISE))
def test_a_codec_mislabel_that_decodes_gives_finite_samples_in_range(kind: str) -> None:
    samples = decode_audio(hostile.DECODED_AS_NOISE[kind](), LIMITS).samples
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0


def test_ten_hours_of_opus_in_ogg_are_refused_from_the_declared_length() -> None:
    with pytest.raises(PayloadTooLarge, match="36000.0 s long; the limit is 60 s"):
        decode_audio(hostile.ten_hours_of_opus("ogg"), LIMITS)


def test_ten_hours_of_opus_in_a_live_webm_are_refused_after_decoding_at_most_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A WebM as a browser's MediaRecorder writes it declares no length: decoding stops at the limit, not the end."""
    data = hostile.ten_hours_of_opus("webm")
    decoded = 0
    frames = audio_av._frames

    def counting(*args: object, **kwargs: object):  # noqa: ANN202
        nonlocal decoded
        for frame in frames(*args, **kwargs):  # type: ignore[arg-type]
            decoded += frame.samples
            yield frame

    monkeypatch.setattr(audio_av, "_frames", counting)
    with pytest.raises(PayloadTooLarge, match="more than 60 s long"):
        decode_audio(data, LIMITS)
    assert 60 * 48000 < decoded <= 60 * 48000 + 5760  # the limit, and at most one 120 ms packet past it


def test_a_container_with_a_thousand_streams_is_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="more than 16 tracks"):
        decode_audio(hostile.streams(1000), LIMITS)
    assert decode_audio(hostile.streams(3), LIMITS).samples.shape == (1024, 1)  # the first audio track of a few


def test_decoding_stops_when_its_cpu_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a decoder that a crafted file keeps busy: the budget is checked on FFmpeg's reads and before
    every packet (a file that does not need the budget is untouched by it: every other test here)."""
    data = media.AUDIO["webm-opus"](hostile.tone(seconds=1.0)[:, 0], 16000)
    class Clock:  # both clocks: 0 when decoding starts, then 10 s on
        reads = 0

        @classmethod
        def now(cls) -> float:
            cls.reads += 1
            return 0.0 if cls.reads <= 4 else 10.0

        monotonic = thread_time = now

    monkeypatch.setattr(audio_av, "time", Clock)
    with pytest.raises(CorruptInput, match="took more than 5 s of CPU time"):
        decode_audio(data, LIMITS)


def test_a_demuxer_scanning_junk_is_stopped_inside_its_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """An MP3 whose first frame is followed by megabytes without a sync code: FFmpeg scans them while it opens the
    file, before any packet; the budget is checked on each of its reads, so it stops there."""
    junk = b"ID3\x04" + bytes(6) + b"\xff\xfb\x90\x00" + bytes(range(255)) * 40_000
    monkeypatch.setattr(audio_av, "_frames", lambda *a: pytest.fail("a packet was reached"))  # type: ignore[arg-type]
    with pytest.raises(CorruptInput, match="took more than 0 s of CPU time"):
        decode_audio(junk, limits(max_decode_seconds=0.0))


def test_an_hour_of_compressed_silence_is_refused_before_decoding() -> None:
    data = hostile.silent_flac(3600)
    assert len(data) < 200_000  # an hour in a small upload: only the declared length gives it away
    with pytest.raises(PayloadTooLarge, match="3600.0 s long; the limit is 60 s"):
        decode_audio(data, LIMITS)


def test_decoded_samples_are_bounded_across_channels() -> None:
    data = hostile.audio_file(hostile.tone(seconds=1.0, rate=16000, channels=8), 16000, "FLAC")
    assert decode_audio(data, limits(max_audio_samples=128_000)).samples.shape == (16000, 8)
    with pytest.raises(PayloadTooLarge, match="128,000 samples; the limit is 127,999"):
        decode_audio(data, limits(max_audio_samples=127_999))


@pytest.mark.parametrize(
    "data,error,message",
    [
        (b"\xc0\xaf", CorruptInput, "UTF-8"),  # overlong encoding of '/'
        (b"\xed\xa0\x80", CorruptInput, "UTF-8"),  # a UTF-16 surrogate, encoded
        (b"ok \xf8\x88\x80\x80\x80", CorruptInput, "UTF-8"),  # 5-byte sequence
        (b"\x00", CorruptInput, "NUL"),
        (" \u00a0\u3000\t\n".encode(), CorruptInput, "whitespace"),  # Unicode spaces are whitespace too
        ("\u200b\u2060\ufeff".encode(), CorruptInput, "invisible"),  # zero-width space, word joiner, BOM
        (" \u200b \u200c\u200d\u00ad\u200e\u2061".encode(), CorruptInput, "invisible"),  # other format characters
        ("\u3164\u2800\ufe0f\U000e0020\x01".encode(), CorruptInput, "invisible"),  # fillers, blanks, selectors, tags
        (b"x" * 40_001, PayloadTooLarge, "bytes; the limit is 10,000 characters"),  # not even decoded
        ("七".encode() * 10_001, PayloadTooLarge, "10,001 characters"),
    ],
)
def test_bad_text_is_refused(data: bytes, error: type[InvalidInput], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_text(data, LIMITS)


@pytest.mark.parametrize(
    "text",
    [
        "a" * 10_000,  # one enormous token
        "مرحبا بالعالم",  # right to left
        "e\u0301\u0302\u0303 Z\u0351\u0352\u0353",  # combining marks
        "\u202eevil\u202c text",  # bidi override
        "👩‍👩‍👧‍👦 🏳️‍🌈",  # ZWJ sequences
        "\ufeffwith a BOM",
    ],
    ids=["long-token", "rtl", "combining", "bidi-override", "zwj-emoji", "bom"],
)
def test_odd_but_valid_text_is_accepted_and_tokenized(text: str) -> None:
    decoded = decode_text(text.encode(), LIMITS)
    assert decoded == text
    ids = GREY(text=decoded).text
    assert 1 <= ids.numel() <= 32 and ids.dtype == torch.long


def test_a_text_at_the_character_limit_in_four_byte_characters_is_accepted() -> None:
    assert len(decode_text("🙂".encode() * 10_000, LIMITS)) == 10_000


def test_hostile_inputs_raise_nothing_but_invalid_input() -> None:
    """The whole corpus above, once more as a group: no decoder raises anything else."""
    cases = [(decode_image, make) for make in (*hostile.IMAGE_BOMBS.values(), *hostile.FOREIGN_IMAGES.values())]
    cases += [(decode_image, make) for make in hostile.BROKEN_IMAGES.values()]
    cases += [(decode_audio, make) for make in (*hostile.FOREIGN_AUDIO.values(), *hostile.LYING_AUDIO.values())]
    for decode, make in cases:
        with pytest.raises(InvalidInput):
            decode(make(), LIMITS)
    assert np.isfinite(decode_audio(hostile.EXOTIC_AUDIO["mp3"](), LIMITS).samples).all()
