"""Slow, silent, oversized and numerous clients against the real server (the protocol and limits `fusion-serve
serve` runs with): each is cut off with a 4xx or a closed connection instead of holding memory or a slot."""
from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import Server, address, running_server, status_of

BODY_LIMIT = 100_000
FORM = (b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nhello\r\n--b--\r\n')


@pytest.fixture(scope="module")
def guarded(models_dir: Path) -> Iterator[Server]:
    with running_server(
        models_dir,
        header_timeout_s=0.5,
        body_timeout_s=0.5,
        keep_alive_s=1,
        max_header_bytes=4096,
        max_body_bytes=BODY_LIMIT,
        max_part_bytes=50_000,
    ) as s:
        yield s


def connect(server: Server) -> socket.socket:
    conn = socket.create_connection(address(server.url), timeout=10)
    return conn


def read_all(conn: socket.socket) -> bytes:
    """Everything until the server closes the connection (or resets it after answering)."""
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def error_of(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]


def predict_head(length: int | None = None, extra: bytes = b"") -> bytes:
    size = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            + size + extra + b"\r\n")


def test_an_oversized_head_is_431_and_the_connection_closed(guarded: Server) -> None:
    with connect(guarded) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ")
        try:
            for _ in range(100):  # up to 6.4 MB of one header line; the server stops reading long before
                conn.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_all(conn)
    assert status_of(response) == 431
    assert error_of(response)["code"] == "request_header_too_large"
    assert b"x-request-id: " in response.lower()


def test_a_head_that_trickles_in_is_408(guarded: Server) -> None:
    with connect(guarded) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")
        try:
            for _ in range(20):  # a byte every 0.1 s: never idle, never done (slowloris)
                conn.sendall(b"X")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_all(conn)
    assert status_of(response) == 408
    assert "did not arrive within 0.5 s" in error_of(response)["message"]


def test_a_silent_connection_is_closed(guarded: Server) -> None:
    with connect(guarded) as conn:
        assert read_all(conn) == b""  # closed by the server, without a word


def test_an_idle_keep_alive_connection_is_closed(guarded: Server) -> None:
    with connect(guarded) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        first = conn.recv(65536)
        assert status_of(first) == 200
        assert read_all(conn) == b""  # after keep_alive_s without a request


def test_a_body_that_stops_arriving_is_408(guarded: Server) -> None:
    with connect(guarded) as conn:
        conn.sendall(predict_head(length=len(FORM) + 1000) + FORM[:20])
        response = read_all(conn)
    assert status_of(response) == 408
    assert error_of(response)["code"] == "request_timeout"
    assert b"connection: close" in response.lower()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def test_a_body_over_the_limit_is_refused_while_it_streams(guarded: Server) -> None:
    """No Content-Length (chunked), and the body never ends: the 413 can only come from counting while reading."""
    with connect(guarded) as conn:
        conn.sendall(predict_head() + chunk(b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n'))
        for _ in range(BODY_LIMIT // 10_000 + 2):
            conn.sendall(chunk(b"a" * 10_000))
        response = conn.recv(65536)  # the closing boundary and the last chunk were never sent
    assert status_of(response) == 413
    assert "larger than the limit" in error_of(response)["message"]


def test_the_service_serves_normally_meanwhile(guarded: Server) -> None:
    with guarded.client() as c:
        assert c.post("/v1/predict", files={"text": (None, "fine")}).status_code == 200


@pytest.fixture(scope="module")
def two_slots(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir, max_inflight_requests=2, body_timeout_s=30) as s:
        yield s


def test_uploads_beyond_the_in_flight_limit_are_503_before_their_body_is_read(two_slots: Server) -> None:
    slow = [connect(two_slots) for _ in range(2)]
    try:
        for conn in slow:  # two uploads that are in progress until we say so
            conn.sendall(predict_head(length=len(FORM)) + FORM[:10])
        deadline = time.monotonic() + 10
        while True:
            with two_slots.client() as c:
                r = c.post("/v1/predict", files={"text": (None, "third")})
            if r.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the two had not reached the app yet
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
        for conn in slow:
            conn.sendall(FORM[10:])
        for conn in slow:
            assert status_of(conn.recv(65536)) == 200  # both finished normally
    finally:
        for conn in slow:
            conn.close()
    with two_slots.client() as c:  # their slots are free again
        assert c.post("/v1/predict", files={"text": (None, "fourth")}).status_code == 200


def test_a_client_that_hangs_up_mid_upload_is_no_error(guarded: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with connect(guarded) as conn:
        conn.sendall(predict_head(length=len(FORM) + 100, extra=b"X-Request-ID: hung-up\r\n") + FORM[:20])
        time.sleep(0.1)
    end = time.monotonic() + 5
    while not [r for r in caplog.records if r.name == "app.access"] and time.monotonic() < end:
        time.sleep(0.02)
    (access,) = [r for r in caplog.records if r.name == "app.access"]
    assert access.fields["status"] == 499 and access.fields["request_id"] == "hung-up"  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback for a client leaving
