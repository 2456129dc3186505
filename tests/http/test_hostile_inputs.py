"""The hostile-input corpus through real HTTP: every case gets the status its class promises (4xx with the error
body and a message, or 200 for odd-but-valid input), never a 5xx, and the service keeps serving afterwards."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from app.errors import PayloadTooLarge
from app.http.multipart import FormLimits, read_form
from tests import hostile
from tests.helpers import png_bytes, wav_bytes
from tests.server import Server, raw_exchange, status_of

Case = tuple[str, Callable[[], dict[str, Any]], int]


def upload(field: str, make: Callable[[], bytes], name: str = "upload.bin", ctype: str = "application/octet-stream"):
    return lambda: {"files": {field: (name, make(), ctype)}}


def raw(body: bytes, content_type: str) -> Callable[[], dict[str, Any]]:
    return lambda: {"content": body, "headers": {"content-type": content_type}}


def part(name: str, value: bytes = b"x", extra: bytes = b"") -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name.encode() + b'"' + extra
    return b"--b\r\n" + disposition + b"\r\n\r\n" + value + b"\r\n"


CASES: list[Case] = [
    *[(f"image-bomb-{k}", upload("image", make), 413) for k, make in hostile.IMAGE_BOMBS.items()],
    ("image-1001-frames", upload("image", lambda: hostile.animation("GIF", 1001)), 413),
    *[(f"image-foreign-{k}", upload("image", make), 415) for k, make in hostile.FOREIGN_IMAGES.items()],
    *[(f"image-exotic-{k}", upload("image", make), 200) for k, make in hostile.EXOTIC_IMAGES.items()],
    *[(f"image-broken-{k}", upload("image", make), 422) for k, make in hostile.BROKEN_IMAGES.items()],
    *[
        (f"image-truncated-{fmt}", upload("image", lambda f=fmt: hostile.image_file(hostile.noise_image(), f)[:300]),
         422)
        for fmt in ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP", "AVIF")
    ],
    *[(f"audio-exotic-{k}", upload("audio", make), 200) for k, make in hostile.EXOTIC_AUDIO.items()],
    *[(f"audio-foreign-{k}", upload("audio", make), 415) for k, make in hostile.FOREIGN_AUDIO.items()],
    *[(f"audio-lying-{k}", upload("audio", make), 422) for k, make in hostile.LYING_AUDIO.items()],
    *[(f"audio-noise-{k}", upload("audio", make), 200) for k, make in hostile.DECODED_AS_NOISE.items()],
    ("audio-hour-of-silence", upload("audio", lambda: hostile.silent_flac(3600)), 413),
    ("audio-ten-hours-of-opus-ogg", upload("audio", lambda: hostile.ten_hours_of_opus("ogg")), 413),
    ("audio-ten-hours-of-opus-live-webm", upload("audio", lambda: hostile.ten_hours_of_opus("webm")), 413),
    ("audio-1000-streams", upload("audio", lambda: hostile.streams(1000)), 413),
    ("text-invalid-utf8", lambda: {"files": {"text": (None, b"caf\xe9")}}, 422),
    ("text-overlong-utf8", lambda: {"files": {"text": (None, b"\xc0\xaf")}}, 422),
    ("text-nul", lambda: {"files": {"text": (None, b"a\x00b")}}, 422),
    ("text-unicode-whitespace", lambda: {"files": {"text": (None, " \u3000\u00a0\n".encode())}}, 422),
    ("text-zero-width-only", lambda: {"files": {"text": (None, "\u200b\u2060\ufeff \u200b".encode())}}, 422),
    ("text-too-many-bytes", lambda: {"files": {"text": (None, b"x" * 50_000)}}, 413),
    ("text-one-huge-token", lambda: {"files": {"text": (None, b"y" * 10_000)}}, 200),
    ("text-rtl-combining-bidi-emoji",
     lambda: {"files": {"text": (None, "مرحبا e\u0301 \u202eabc\u202c 👩‍👩‍👧".encode())}}, 200),
    ("text-as-a-file-part", upload("text", lambda: b"hello from a file", "t.txt", "text/plain"), 200),
    ("png-named-wav-with-audio-type", upload("image", png_bytes, "clip.wav", "audio/wav"), 200),
    ("wav-named-png-with-image-type", upload("audio", wav_bytes, "photo.png", "image/png"), 200),
    ("multipart-wrong-boundary", raw(part("text") + b"--b--\r\n", "multipart/form-data; boundary=other"), 400),
    ("multipart-quoted-boundary", raw(part("text") + b"--b--\r\n", 'multipart/form-data; boundary="b"'), 200),
    ("multipart-empty-body", raw(b"", "multipart/form-data; boundary=b"), 400),
    ("multipart-part-without-name", raw(b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
                                        "multipart/form-data; boundary=b"), 400),
    ("multipart-not-form-data-part", raw(b"--b\r\nContent-Disposition: attachment; name=\"text\"\r\n\r\nx\r\n--b--\r\n",
                                         "multipart/form-data; boundary=b"), 400),
    ("multipart-5000-parts", raw(part("text") * 5000 + b"--b--\r\n", "multipart/form-data; boundary=b"), 400),
    ("multipart-20-unknown-fields", raw(b"".join(part(f"f{i}") for i in range(20)) + b"--b--\r\n",
                                        "multipart/form-data; boundary=b"), 422),
    ("multipart-huge-part-header", raw(part("text", extra=b"; x=" + b"a" * 10_000) + b"--b--\r\n",
                                       "multipart/form-data; boundary=b"), 400),
    ("multipart-garbage", raw(b"\x00\xff" * 500, "multipart/form-data; boundary=b"), 400),
    ("multipart-mixed", raw(part("text") + b"--b--\r\n", "multipart/mixed; boundary=b"), 415),
    ("urlencoded-form", raw(b"text=hello", "application/x-www-form-urlencoded"), 415),
    ("plain-text-body", raw(b"hello", "text/plain"), 415),
    ("no-content-type", lambda: {"content": b"hello"}, 415),
]


@pytest.mark.parametrize("make,status", [(make, status) for _, make, status in CASES], ids=[c[0] for c in CASES])
def test_hostile_input(server: Server, make: Callable[[], dict[str, Any]], status: int) -> None:
    with server.client() as c:
        r = c.post("/v1/predict", **make())
    assert r.status_code == status, r.text
    assert r.headers["x-request-id"]
    if status != 200:
        error = r.json()["error"]
        assert error["message"] and error["code"] and error["request_id"] == r.headers["x-request-id"]
        assert "Traceback" not in error["message"] and "/app/" not in error["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405_with_the_error_body(server: Server, method: str) -> None:
    with server.client() as c:
        r = c.request(method, "/v1/predict")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "name",
    ["..", ".", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "tiny%00", "tiny%2F..%2Ftiny", "%C0%AE%C0%AE", "t" * 65,
     "t%C3%ADny", "tiny/../../..", "~root", "-tiny", ".tiny"],
)
def test_model_names_cannot_traverse_paths_in_predict(server: Server, name: str) -> None:
    body = part("text", b"hi") + b"--b--\r\n"
    response = raw_exchange(
        server.url,
        f"POST /v1/models/{name}/predict HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    assert status_of(response) in (404, 422), response  # sent as is: no client removed the dot segments
    assert b'"error"' in response


def test_the_service_still_serves_after_the_corpus(server: Server) -> None:
    with server.client() as c:
        assert c.post("/v1/predict", files={"text": (None, "still here")}).status_code == 200


@pytest.mark.parametrize("incoming", ["x" * 129, "has space", "ünï", "a\tb", ""])
def test_an_insane_request_id_is_replaced(server: Server, incoming: str) -> None:
    with server.client() as c:
        r = c.get("/healthz", headers={"X-Request-ID": incoming.encode("utf-8")})
    assert r.headers["x-request-id"] != incoming and len(r.headers["x-request-id"]) == 32


def test_a_sane_request_id_is_echoed(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/predict", json={}, headers={"X-Request-ID": "client-id:42.a_b-c"})
    assert r.headers["x-request-id"] == "client-id:42.a_b-c" == r.json()["error"]["request_id"]


def test_http_client_sees_no_server_header(server: Server) -> None:
    assert "server" not in httpx.get(f"{server.url}/healthz").headers


def test_the_form_reader_stops_pulling_the_body_at_the_limit() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
        while True:
            pulled += 1
            yield b"\0" * 10_000

    limits = FormLimits(max_body_bytes=100_000, max_part_bytes=1_000_000)
    with pytest.raises(PayloadTooLarge, match="100,000 bytes"):
        asyncio.run(read_form("multipart/form-data; boundary=b", None, endless(), ("image",), limits))
    assert pulled == 10  # not one chunk more than it takes to pass the limit: nothing is buffered beyond it
