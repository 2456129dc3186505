"""The byte budget (uploads and decodes), the footprint estimates it is fed from the files' headers, and the
buffer reader that lets decoders read an upload without copying it."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.errors import Overloaded, PayloadTooLarge
from app.inputs.audio import decode_audio
from app.inputs.budget import ByteBudget
from app.inputs.footprint import (
    audio_footprint,
    decoded_footprint,
    image_footprint,
    largest_footprint,
)
from app.inputs.image import decode_image
from app.inputs.parts import COPY_BELOW, RawInputs, open_buffer
from app.inputs.text import decode_text
from tests.helpers import limits, png_bytes, wav_bytes

LIMITS = limits()


def test_uploads_fill_the_budget_up_to_its_reserve_and_decoding_may_use_the_rest() -> None:
    budget = ByteBudget(1000, reserve=300)
    first, second = budget.hold(), budget.hold()
    first.take(600)
    with pytest.raises(Overloaded) as refused:
        second.take(200)  # 800 > 700 for uploads
    assert refused.value.retry_after_s == 1
    second.take(100)
    assert budget.in_use == 700
    with budget.decoding(300):  # the reserve
        assert budget.in_use == 1000
        with pytest.raises(Overloaded):
            with budget.decoding(1):
                pass
    first.release()
    first.release()  # once only
    assert budget.in_use == 100
    second.release()
    assert budget.in_use == 0 and budget.refused == 2


def test_what_could_never_fit_is_413_not_503() -> None:
    budget = ByteBudget(1000, reserve=300)
    with pytest.raises(PayloadTooLarge, match="larger than this server can hold"):
        budget.hold().take(701)
    with pytest.raises(PayloadTooLarge, match="more than this server's memory budget"):
        with budget.decoding(1001):
            pass
    assert budget.in_use == 0


def test_a_decode_that_fails_gives_its_bytes_back() -> None:
    budget = ByteBudget(1000)
    with pytest.raises(ValueError):
        with budget.decoding(500):
            raise ValueError("corrupt")
    assert budget.in_use == 0


def test_an_unconfigured_budget_counts_but_refuses_nothing() -> None:
    budget = ByteBudget()
    hold = budget.hold()
    hold.take(10**12)
    assert budget.in_use == 10**12 and budget.for_uploads is None
    hold.release()
    with pytest.raises(ValueError):
        budget.configure(100, reserve=100)


def test_image_footprints_come_from_the_header_by_pixel_mode() -> None:
    rgb = png_bytes((300, 200))
    grey = png_bytes((300, 200), mode="L")
    rgba = png_bytes((300, 200), mode="RGBA")
    assert image_footprint(rgb, LIMITS) == 300 * 200 * 6
    assert image_footprint(grey, LIMITS) == 300 * 200 * 6
    assert image_footprint(rgba, LIMITS) == 300 * 200 * 22
    # Nothing for what the decoder refuses before decoding: over the pixel limit, not an image.
    assert image_footprint(rgb, limits(max_image_pixels=1000)) == 0
    assert image_footprint(b"not an image", LIMITS) == 0
    assert decoded_footprint(RawInputs(text=b"hello"), LIMITS) == 0


def test_audio_footprints_grow_with_samples_channels_and_duration() -> None:
    mono, stereo = wav_bytes(2.0, rate=8000), wav_bytes(2.0, rate=8000, channels=2)
    assert 0 < audio_footprint(mono, LIMITS) < audio_footprint(stereo, LIMITS)
    assert audio_footprint(wav_bytes(4.0, rate=8000), LIMITS) == 2 * audio_footprint(mono, LIMITS)
    assert audio_footprint(mono, limits(max_audio_seconds=1.0)) == 0
    both = RawInputs(image=png_bytes(), audio=mono)
    assert decoded_footprint(both, LIMITS) == image_footprint(png_bytes(), LIMITS) + audio_footprint(mono, LIMITS)


def test_the_largest_footprint_follows_the_limits() -> None:
    small = limits(max_image_pixels=1_000_000, max_audio_samples=100_000, max_audio_seconds=10)
    assert largest_footprint(small) < largest_footprint(LIMITS)
    assert largest_footprint(small) >= image_footprint(png_bytes((1000, 1000)), small)


@pytest.mark.parametrize("large", [False, True], ids=["copied", "in-place"])
@pytest.mark.parametrize("wrap", [bytes, bytearray, lambda b: memoryview(bytearray(b"xx" + b))[2:]])
def test_decoders_read_any_buffer_alike(wrap, large: bool) -> None:  # noqa: ANN001 - a buffer constructor
    png, wav = (png_bytes((700, 700)), wav_bytes(12, rate=48000)) if large else (png_bytes((40, 30)), wav_bytes(0.5))
    assert (min(len(png), len(wav)) >= COPY_BELOW) == large
    assert np.array_equal(np.asarray(decode_image(wrap(png), LIMITS)), np.asarray(decode_image(png, LIMITS)))
    assert np.array_equal(decode_audio(wrap(wav), LIMITS).samples, decode_audio(wav, LIMITS).samples)
    assert decode_text(wrap("héllo".encode()), LIMITS) == "héllo"


def test_open_buffer_reads_a_large_buffer_in_place_and_copies_a_small_one() -> None:
    data = bytearray(b"0123456789") + bytearray(COPY_BELOW)
    f = open_buffer(memoryview(data)[2:])
    assert f.read(3) == b"234"
    f.seek(-2, io.SEEK_END)
    assert f.read() == b"\0\0" and f.tell() == len(data) - 2
    f.seek(0)
    data[2] = ord("X")  # a view, not a copy
    assert f.read(2) == b"X3"
    small = bytearray(b"0123")
    g = open_buffer(small)
    small[0] = ord("X")
    assert g.read() == b"0123"
    image = Image.open(open_buffer(bytearray(png_bytes((8, 8))) + bytearray(COPY_BELOW)))
    assert image.size == (8, 8)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_U8", "FLOAT", "DOUBLE", "ULAW", "ALAW", "IMA_ADPCM"])
def test_wav_footprints_read_from_the_chunks_agree_with_libsndfile(subtype: str) -> None:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros((12345, 2)), 22050, subtype=subtype, format="WAV")
    data = buf.getvalue()
    info = sf.info(io.BytesIO(data))
    same_but_flac = io.BytesIO()  # the same shape, as a format only libsndfile reads
    sf.write(same_but_flac, np.zeros((info.frames, info.channels)), info.samplerate, format="FLAC")
    assert audio_footprint(data, LIMITS) == audio_footprint(same_but_flac.getvalue(), LIMITS) > 0
