"""Bad input is refused before queueing with a 4xx and a message that says what to fix; never a 5xx."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.helpers import png_bytes, wav_bytes
from tests.server import Server, running_server


@pytest.fixture(scope="module")
def strict(models_dir: Path) -> Iterator[Server]:
    """Small limits so that 'too large' is cheap to provoke."""
    with running_server(
        models_dir,
        max_body_bytes=200_000,
        max_part_bytes=100_000,
        max_image_pixels=10_000,
        max_audio_seconds=2.0,
        max_text_chars=100,
    ) as s:
        yield s


def error_of(r: httpx.Response, status: int, code: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    if code:
        assert body["code"] == code
    assert body["request_id"] == r.headers["x-request-id"]
    return body["message"]


def post(s: Server, **kw: object) -> httpx.Response:
    with s.client() as c:
        return c.post("/v1/predict", **kw)


def test_no_modality_is_422(strict: Server) -> None:
    msg = error_of(post(strict, files={"top": (None, "x")}), 422, "unknown_field")
    assert "image, text, audio" in msg
    msg = error_of(post(strict, files={"image": ("a.png", b"", "image/png")}), 422, "missing_input")
    assert "at least one" in msg


def test_empty_multipart_is_422(strict: Server) -> None:
    body = b"--b--\r\n"
    r = post(strict, content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert "at least one" in error_of(r, 422, "missing_input")


def test_unknown_field_is_422(strict: Server) -> None:
    msg = error_of(post(strict, files={"text": (None, "hi"), "video": ("v.mp4", b"xx")}), 422, "unknown_field")
    assert "'video'" in msg


def test_not_multipart_is_415(strict: Server) -> None:
    assert "multipart/form-data" in error_of(post(strict, json={"text": "hi"}), 415, "unsupported_media_type")
    assert "multipart/form-data" in error_of(post(strict, data={"text": "hi"}), 415)


def test_malformed_multipart_is_400(strict: Server) -> None:
    no_boundary = post(strict, content=b"xx", headers={"content-type": "multipart/form-data"})
    assert "boundary" in error_of(no_boundary, 400, "malformed_request")
    cut = b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nhello'
    r = post(strict, content=cut, headers={"content-type": "multipart/form-data; boundary=b"})
    assert "closing boundary" in error_of(r, 400, "malformed_request")


def test_repeated_field_is_refused(strict: Server) -> None:
    r = post(strict, files=[("text", (None, "a")), ("text", (None, "b"))])
    assert "more than once" in error_of(r, 400)


@pytest.mark.parametrize(
    "field,payload",
    [
        ("image", b"this is plain text, not an image"),
        ("image", wav_bytes()),
        ("image", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n"),
        ("image", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'),
        ("image", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
        ("audio", png_bytes()),
    ],
    ids=["text-as-image", "wav-as-image", "pdf", "svg", "eps", "png-as-audio"],
)
def test_wrong_content_is_415_whatever_the_name(strict: Server, field: str, payload: bytes) -> None:
    name = "photo.png" if field == "image" else "clip.wav"
    r = post(strict, files={field: (name, payload, "image/png" if field == "image" else "audio/wav")})
    assert "content" in error_of(r, 415, "unsupported_media_type")


def test_a_wav_signature_over_junk_is_422(strict: Server) -> None:
    """It is a WAV by its content, and a broken one: corrupt (422), like any other container cut or garbled."""
    r = post(strict, files={"audio": ("clip.wav", b"RIFF....WAVEjunk", "audio/wav")})
    assert "starts like a WAV" in error_of(r, 422, "corrupt_input")


def test_truncated_image_is_422(strict: Server) -> None:
    data = png_bytes((60, 60))
    r = post(strict, files={"image": ("a.png", data[: len(data) // 2], "image/png")})
    assert "corrupt or truncated" in error_of(r, 422, "corrupt_input")


def test_truncated_audio_is_refused(strict: Server) -> None:
    data = wav_bytes(seconds=0.5)
    r = post(strict, files={"audio": ("a.wav", data[:60], "audio/wav")})
    assert r.status_code in (415, 422)
    assert r.json()["error"]["message"]


def test_too_many_pixels_is_413_before_decoding(strict: Server) -> None:
    msg = error_of(post(strict, files={"image": ("big.png", png_bytes((200, 200), noise=False), "image/png")}), 413)
    assert "200x200" in msg and "10,000" in msg


def test_part_too_large_is_413(strict: Server) -> None:
    r = post(strict, files={"audio": ("a.wav", b"\0" * 150_000, "audio/wav")})
    assert "per part" in error_of(r, 413, "payload_too_large")


def test_body_too_large_is_413_even_without_content_length(strict: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        for _ in range(100):
            yield b"\0" * 10_000

    r = post(strict, content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


def test_audio_too_long_is_413(strict: Server) -> None:
    r = post(strict, files={"audio": ("long.wav", wav_bytes(seconds=3.0, rate=8000), "audio/wav")})
    assert "3.0 s" in error_of(r, 413)


def test_text_too_long_is_413(strict: Server) -> None:
    assert "limit is 100" in error_of(post(strict, files={"text": (None, "x" * 101)}), 413)


@pytest.mark.parametrize(
    "text,expected",
    [(b"\xff\xfe not utf-8", "UTF-8"), (b"   \n\t ", "whitespace"), (b"a\x00b", "NUL")],
    ids=["invalid-utf8", "whitespace", "nul"],
)
def test_bad_text_is_422(strict: Server, text: bytes, expected: str) -> None:
    assert expected in error_of(post(strict, files={"text": (None, text)}), 422, "corrupt_input")


def test_unicode_text_is_fine(strict: Server) -> None:
    r = post(strict, files={"text": (None, "שלום e\u0301 七 🙂".encode())})
    assert r.status_code == 200


def test_audio_with_bad_sample_rate_is_422(strict: Server) -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(100), 500, format="WAV", subtype="PCM_16")
    assert "sample rate" in error_of(post(strict, files={"audio": ("a.wav", buf.getvalue())}), 422)


def test_bad_input_never_reaches_the_model(strict: Server) -> None:
    model = strict.served()
    before = model.predictor.forward_passes
    post(strict, files={"image": ("a.png", b"junk")})
    post(strict, files={"text": (None, "x" * 500)})
    assert model.predictor.forward_passes == before
