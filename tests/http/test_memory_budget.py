"""The memory budget for requests in flight, over real HTTP against the real app: uploads held by their declared
length or as they arrive, refused before their body is read when they do not fit, inputs held while decoded, and
everything given back when a request ends, its client gone included."""
from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.inputs.budget import ByteBudget
from tests.helpers import png_bytes
from tests.server import Server, address, running_server, status_of

MiB = 2**20
BUDGET = 8 * MiB  # the tiny model's decode reserve is larger: half of it is kept for decoding, half for uploads
TEXT = {"text": (None, "hello there")}


@pytest.fixture(scope="module")
def small(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir, max_inflight_bytes=BUDGET, body_timeout_s=30) as s:
        yield s


def held(server: Server) -> int:
    """The bytes requests in flight hold, as /metrics says."""
    text = httpx.get(f"{server.url}/metrics").text
    return int(float(re.search(r"^fusion_inflight_bytes (\S+)$", text, re.M).group(1)))  # type: ignore[union-attr]


def wait_held(server: Server, condition: Callable[[int], bool], what: str) -> int:
    end = time.monotonic() + 10
    while not condition(value := held(server)):
        assert time.monotonic() < end, f"{what}: {value:,} bytes held"
        time.sleep(0.02)
    return value


def upload_head(length: int | None, field: str = "image") -> bytes:
    """A /v1/predict request line and headers (chunked when `length` is None) and the start of a form part."""
    size = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n" + size
            + b"\r\n")


PART_START = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\n'


def connect(server: Server) -> socket.socket:
    return socket.create_connection(address(server.url), timeout=10)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def response_of(conn: socket.socket) -> tuple[int, dict[str, str], dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    headers = dict(line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:])
    while len(body) < int(headers.get("content-length", "0")):
        body += conn.recv(65536)
    return status_of(data), headers, json.loads(body)


def test_an_upload_that_does_not_fit_is_503_before_its_body_is_read(small: Server) -> None:
    assert held(small) == 0
    with connect(small) as occupier, connect(small) as late:
        occupier.sendall(upload_head(3 * MiB) + PART_START)  # admitted: 3 of the 4 MiB uploads may hold
        wait_held(small, lambda n: n == 3 * MiB, "the declared length, held at admission")
        late.sendall(upload_head(2 * MiB))  # the head alone: not one byte of the body
        status, headers, body = response_of(late)
        assert status == 503 and headers["retry-after"] == "1"
        assert body["error"]["code"] == "overloaded" and "retry after 1 s" in body["error"]["message"]
        with small.client() as c:  # a small request still fits beside the occupier
            assert c.post("/v1/predict", files=TEXT).status_code == 200
        assert held(small) == 3 * MiB
    # The occupier's client left mid-upload: its bytes are given back, and a new upload fits again.
    wait_held(small, lambda n: n == 0, "the bytes of an upload whose client left")
    with small.client() as c:
        r = c.post("/v1/predict", files={"image": ("a.png", png_bytes((64, 64)), "image/png")})
    assert r.status_code == 200, r.text
    assert held(small) == 0


def test_a_body_larger_than_the_budget_could_ever_hold_is_413_at_once(small: Server) -> None:
    with connect(small) as conn:
        conn.sendall(upload_head(5 * MiB))
        status, _, body = response_of(conn)
    assert status == 413 and "larger than this server can hold in memory" in body["error"]["message"]


def test_a_chunked_upload_is_held_as_it_arrives_and_refused_once_it_does_not_fit(small: Server) -> None:
    with connect(small) as chunked, connect(small) as other:
        chunked.sendall(upload_head(None) + chunk(PART_START))
        for _ in range(4):
            chunked.sendall(chunk(b"\0" * (MiB // 4)))
        first = wait_held(small, lambda n: n >= MiB, "a chunked body's bytes, as they arrive")
        assert first < MiB + 64 * 1024  # what arrived, not more
        other.sendall(upload_head(2 * MiB) + PART_START)  # an upload with a length, admitted beside it
        wait_held(small, lambda n: n >= 3 * MiB, "both")
        try:
            for _ in range(8):  # 2 MiB more would pass the 4 MiB uploads may hold
                chunked.sendall(chunk(b"\0" * (MiB // 4)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = response_of(chunked)
        assert status == 503 and headers["retry-after"] == "1" and body["error"]["code"] == "overloaded"
        wait_held(small, lambda n: n == 2 * MiB, "the refused chunked upload's bytes given back")
    wait_held(small, lambda n: n == 0, "everything given back once both clients left")


def test_a_decode_is_held_on_the_budget_too(small: Server) -> None:
    # A flat grey 1000x850 PNG is a few kilobytes, and decodes to about 5 MB with its working copies.
    image = {"image": ("grey.png", png_bytes((1000, 850), mode="L", noise=False), "image/png")}
    with connect(small) as occupier:
        occupier.sendall(upload_head(3 * MiB + MiB // 2) + PART_START)
        wait_held(small, lambda n: n > 3 * MiB, "the occupier")
        with small.client() as c:
            busy = c.post("/v1/predict", files=image)  # its body fits, its decode does not now
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
        assert "no memory to decode" in busy.json()["error"]["message"]
    wait_held(small, lambda n: n == 0, "the occupier's bytes given back")
    with small.client() as c:
        assert c.post("/v1/predict", files=image).status_code == 200
        # One that decodes to more than the whole budget never could: 413, on /v1 as on /v2.
        huge = png_bytes((1500, 1000), mode="L", noise=False)
        v1 = c.post("/v1/predict", files={"image": ("huge.png", huge, "image/png")})
        header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                         "parameters": {"binary_data_size": 4 + len(huge)}}]}).encode()
        v2 = c.post("/v2/models/tiny/infer", content=header + len(huge).to_bytes(4, "little") + huge,
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "Content-Type": "application/octet-stream"})
    assert v1.status_code == v2.status_code == 413, (v1.text, v2.text)
    assert "more than this server's memory budget" in v1.json()["error"]["message"]
    assert held(small) == 0


def test_the_budget_is_shown_in_the_model_limits_and_the_metrics(small: Server) -> None:
    with small.client() as c:
        limits = c.get("/v1/models").json()["models"][0]["limits"]
        metrics = c.get("/metrics").text
    assert limits["max_inflight_bytes"] == BUDGET and limits["inflight_bytes_reserve"] == BUDGET // 2
    assert float(re.search(r"^fusion_inflight_bytes_limit (\S+)$", metrics, re.M).group(1)) == BUDGET  # type: ignore[union-attr]
    assert re.search(r"^fusion_inflight_bytes_refusals_total [1-9]", metrics, re.M)  # the tests above were refused


def test_the_default_budget_is_derived_and_logged(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.http.app")
    with running_server(models_dir) as s, s.client() as c:
        limits = c.get("/v1/models").json()["models"][0]["limits"]
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory budget for requests")]
    assert limits["max_inflight_bytes"] >= 64 * MiB
    assert f"{limits['max_inflight_bytes'] / MiB:,.1f} MiB" in line and "peak RSS once loaded" in line
    assert ByteBudget(limits["max_inflight_bytes"], limits["inflight_bytes_reserve"]).for_uploads > 0
