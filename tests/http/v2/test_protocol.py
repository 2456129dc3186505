"""The Open Inference Protocol (v2) on the wire: body layout, the `{"error": "..."}` body with our statuses, limits,
readiness, and samples going through the dynamic batcher (shared passes, overload, disconnects)."""
from __future__ import annotations

import base64
import gzip
import json
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import LABELS, Gate, png_bytes, wait_queue
from tests.server import Server, running_server

INFER = "/v2/models/tiny/infer"


def text_input(*texts: str) -> dict[str, Any]:
    return {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": list(texts)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def serialize(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


def post(s: Server, body: Any = None, path: str = INFER, **kw: Any) -> httpx.Response:
    with s.client() as c:
        return c.post(path, json=body, **kw) if body is not None else c.post(path, **kw)


def error_of(r: httpx.Response, status: int) -> str:
    """The protocol's error body: exactly {"error": "<message>"}; X-Request-ID still set."""
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert r.headers["x-request-id"]
    return body["error"]


def test_json_request_and_response(server: Server) -> None:
    r = post(server, {"id": "abc", "inputs": [text_input("a dog", "a cat")], "outputs": [{"name": "probabilities"}]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["model_name"] == "tiny" and body["model_version"] == "0.0.1" and body["id"] == "abc"
    (out,) = body["outputs"]
    assert out["name"] == "probabilities" and out["datatype"] == "FP32" and out["shape"] == [2, len(LABELS)]
    assert len(out["data"]) == 2 * len(LABELS)
    assert sum(out["data"][: len(LABELS)]) == pytest.approx(1.0, abs=1e-5)


def test_nested_json_data_is_accepted(server: Server) -> None:
    flat = post(server, {"inputs": [text_input("a dog", "a cat")]}).json()["outputs"][0]["data"]
    nested = {"name": "text", "datatype": "BYTES", "shape": [2], "data": [["a dog"], ["a cat"]]}
    assert post(server, {"inputs": [nested]}).json()["outputs"][0]["data"] == flat


def test_binary_request_and_response_layout(server: Server) -> None:
    tensor = serialize(b"a dog", b"a cat")
    body, headers = binary_body(
        {
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [2], "data": [b64(png_bytes()), ""]},
                {"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(tensor)}},
            ],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "labels"}, {"name": "probabilities"}],
        },
        tensor,
    )
    r = post(server, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    labels, probs = head["outputs"]
    assert labels["name"] == "labels" and labels["shape"] == [len(LABELS)] and "data" not in labels
    assert probs["shape"] == [2, len(LABELS)] and probs["datatype"] == "FP32"
    rest = r.content[n:]
    assert len(rest) == labels["parameters"]["binary_data_size"] + probs["parameters"]["binary_data_size"]
    assert rest[: labels["parameters"]["binary_data_size"]] == serialize(*(x.encode() for x in LABELS))
    values = struct.unpack(f"<{2 * len(LABELS)}f", rest[labels["parameters"]["binary_data_size"] :])
    assert sum(values[: len(LABELS)]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "body,expected",
    [
        (b"{", "Invalid JSON"),
        (b"[]", "object"),
        (b'{"inputs": [{"name": "text", "shape": [1], "data": ["x"]}]}', "datatype"),
        (b'{"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}', "BYTES"),
        (b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["x"]}]}', "2 elements"),
        (b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]}]}', "shape [N]"),
        (b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1], "data": ["x"]}]}', "negative"),
        (b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [7]}]}', "strings"),
        (b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}', "neither"),
        (b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}', "base64"),
        (
            b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]},'
            b' {"name": "image", "datatype": "BYTES", "shape": [2], "data": ["", ""]}]}',
            "disagree",
        ),
        (
            b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]},'
            b' {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["y"]}]}',
            "more than once",
        ),
        (b'{"inputs": [], "parameters": {"binary_data_output": "yes"}}', "true or false"),
        (
            b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}],'
            b' "outputs": [{"name": "labels", "parameters": {"classification": 2}}]}',
            "classification",
        ),
    ],
    ids=[
        "bad-json", "not-object", "no-datatype", "fp32", "count", "2d", "negative", "not-string", "no-data",
        "bad-base64", "disagree", "repeated", "bad-param", "classify-labels",
    ],
)
def test_malformed_requests_are_400(server: Server, body: bytes, expected: str) -> None:
    assert expected in error_of(post(server, content=body), 400)


def test_binary_data_sizes_must_add_up(server: Server) -> None:
    tensor = serialize(b"a dog")  # 9 bytes

    def request(size: int, *chunks: bytes, shape: tuple[int, ...] = (1,)) -> httpx.Response:
        parameters = {"binary_data_size": size}
        body, headers = binary_body(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": list(shape), "parameters": parameters}]}, *chunks
        )
        return post(server, content=body, headers=headers)

    assert request(9, tensor).status_code == 200
    assert "only 9 remain" in error_of(request(20, tensor), 400)
    assert "element 0 declares 5 bytes but only 0 remain" in error_of(request(4, tensor[:4]), 400)
    assert "4-byte length" in error_of(request(2, tensor[:2]), 400)
    assert "5 bytes follow the JSON" in error_of(request(9, tensor, b"extra"), 400)
    assert "more binary elements than its shape's 1" in error_of(request(18, tensor * 2), 400)
    assert "than its shape's 0" in error_of(request(9, tensor, shape=(0,)), 400)
    assert "no samples" in error_of(request(0, shape=(0,)), 422)
    body, _ = binary_body({"inputs": []}, tensor)
    for bad in ("999999", "0", "-3", "x"):
        msg = error_of(post(server, content=body, headers={"Inference-Header-Content-Length": bad}), 400)
        assert "Inference-Header-Content-Length" in msg
    assert "Invalid JSON" in error_of(post(server, content=body), 400)  # binary data without the header


@pytest.mark.parametrize(
    "inputs,outputs,expected",
    [
        ([], None, "no inputs"),
        ([{"name": "video", "datatype": "BYTES", "shape": [1], "data": ["x"]}], None, "unknown input 'video'"),
        ([text_input("x")], [{"name": "logits"}], "unknown output 'logits'"),
        ([text_input("x", "")], None, "sample 1: no input given"),
        ([text_input("   ")], None, "whitespace"),
    ],
    ids=["no-inputs", "unknown-input", "unknown-output", "empty-sample", "blank-text"],
)
def test_invalid_input_is_422(server: Server, inputs: list, outputs: list | None, expected: str) -> None:
    body: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = outputs
    assert expected in error_of(post(server, body), 422)


def test_one_bad_sample_refuses_the_request_before_anything_runs(server: Server) -> None:
    model = server.served()
    before = model.predictor.forward_passes
    good, truncated = b64(png_bytes()), b64(png_bytes((60, 60))[:200])
    image = {"name": "image", "datatype": "BYTES", "shape": [3], "data": [good, good, truncated]}
    assert "sample 2: image: the PNG file is corrupt" in error_of(post(server, {"inputs": [image]}), 422)
    audio = {"name": "audio", "datatype": "BYTES", "shape": [2], "data": ["", b64(b"junk" * 10)]}
    assert "sample 1" in error_of(post(server, {"inputs": [text_input("a", "b"), audio]}), 415)
    assert model.predictor.forward_passes == before


def test_unknown_model_version_and_endpoint_are_404(server: Server) -> None:
    with server.client() as c:
        assert "nope" in error_of(c.get("/v2/models/nope"), 404)
        assert "version '0.0.1'" in error_of(c.get("/v2/models/tiny/versions/3"), 404)
        wrong_version = c.post("/v2/models/tiny/versions/3/infer", json={"inputs": [text_input("x")]})
        assert "version" in error_of(wrong_version, 404)
        assert "/v2/repository/index" in error_of(c.post("/v2/repository/index"), 404)
        assert error_of(c.get("/v2/models/" + "a" * 65), 422)
        ok = c.post("/v2/models/tiny/versions/0.0.1/infer", json={"inputs": [text_input("x")]})
        assert ok.status_code == 200


def test_compressed_body_is_415(server: Server) -> None:
    body = gzip.compress(json.dumps({"inputs": [text_input("x")]}).encode())
    assert "Content-Encoding" in error_of(post(server, content=body, headers={"Content-Encoding": "gzip"}), 415)


def test_health_bodies(server: Server) -> None:
    with server.client() as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": True}
        assert c.get("/v2/").json()["name"] == "fusion-serve"


def test_openapi_documents_the_protocol(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
                 "/v2/models/{name}/versions/{version}", "/v2/models/{name}/versions/{version}/infer"):
        assert path in spec["paths"], path
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    content = infer["requestBody"]["content"]
    assert set(content) == {"application/json", "application/octet-stream"}
    assert content["application/json"]["schema"]["properties"]["inputs"]["items"]["properties"]["data"]
    assert "$ref" not in json.dumps(content)
    assert "Inference-Header-Content-Length" in [p["name"] for p in infer["parameters"]]


@pytest.fixture(scope="module")
def strict(models_dir: Path) -> Iterator[Server]:
    with running_server(
        models_dir, max_body_bytes=200_000, max_part_bytes=100_000, max_image_pixels=10_000, max_queue_size=4
    ) as s:
        yield s


def test_limits_are_413(strict: Server) -> None:
    assert "body" in error_of(post(strict, content=b"{" + b" " * 250_000 + b"}"), 413)

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 10_000

    assert "body" in error_of(post(strict, content=chunks()), 413)
    big = serialize(b"\0" * 120_000)
    audio = {"name": "audio", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(big)}}
    body, headers = binary_body({"inputs": [audio]}, big)
    assert "per file" in error_of(post(strict, content=body, headers=headers), 413)
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64(png_bytes((200, 200), noise=False))]}
    assert "200x200" in error_of(post(strict, {"inputs": [image]}), 413)
    assert "at most 4" in error_of(post(strict, {"inputs": [text_input(*"abcde")]}), 413)
    tensor = serialize(*[b""] * 5)
    texts = {"name": "text", "datatype": "BYTES", "shape": [5], "parameters": {"binary_data_size": len(tensor)}}
    body, headers = binary_body({"inputs": [texts]}, tensor)
    assert "at most 4" in error_of(post(strict, content=body, headers=headers), 413)


def test_samples_of_one_request_share_a_forward_pass(server: Server) -> None:
    model = server.served()
    with Gate(model) as gate, ThreadPoolExecutor(2) as pool:
        held = pool.submit(post, server, {"inputs": [text_input("first")]})
        assert gate.entered.wait(10)
        batch = pool.submit(post, server, {"inputs": [text_input(*(f"sample {i}" for i in range(8)))]})
        wait_queue(model, 8)
        gate.release.set()
        assert held.result().status_code == 200
        r = batch.result()
    assert r.status_code == 200
    assert r.json()["outputs"][0]["shape"] == [8, len(LABELS)]
    assert gate.batch_sizes == [1, 8]


@pytest.fixture()
def tight(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir, max_queue_size=2) as s:
        yield s


def test_full_queue_refuses_the_whole_request_and_withdraws_its_samples(tight: Server) -> None:
    model = tight.served()
    with Gate(model) as gate, ThreadPoolExecutor(2) as pool:
        held = pool.submit(post, tight, {"inputs": [text_input("held")]})
        assert gate.entered.wait(10)
        queued = pool.submit(post, tight, {"inputs": [text_input("queued")]})
        wait_queue(model, 1)
        r = post(tight, {"inputs": [text_input("one", "two")]})  # the first fits, the second does not
        assert "queue is full" in error_of(r, 503)
        assert int(r.headers["retry-after"]) >= 1
        gate.release.set()
        assert held.result().status_code == queued.result().status_code == 200
    assert gate.batch_sizes == [1, 1]  # the withdrawn sample never ran


def test_samples_whose_client_left_are_skipped(server: Server) -> None:
    model = server.served()
    with Gate(model) as gate, ThreadPoolExecutor(2) as pool:
        held = pool.submit(post, server, {"inputs": [text_input("held")]})
        assert gate.entered.wait(10)
        with pytest.raises(httpx.TimeoutException), httpx.Client(base_url=server.url, timeout=0.3) as c:
            c.post(INFER, json={"inputs": [text_input("gone", "too")]})
        time.sleep(0.2)  # let the server notice the disconnect
        gate.release.set()
        assert held.result().status_code == 200
        assert post(server, {"inputs": [text_input("last")]}).status_code == 200
    assert gate.batch_sizes == [1, 1]


def test_failing_batch_is_500_in_the_protocol_body(server: Server) -> None:
    model = server.served()

    def broken(samples: list) -> list:
        raise RuntimeError("/secret/path exploded")

    model.predictor.predict = broken  # type: ignore[method-assign]
    try:
        r = post(server, {"inputs": [text_input("x", "y")]})
    finally:
        del model.predictor.predict
    assert "model failed" in error_of(r, 500) and "/secret" not in r.text


def test_not_ready_answers(models_dir: Path, held_warmup: threading.Event) -> None:
    release = held_warmup
    with running_server(models_dir, wait_ready=False) as s, s.client() as c:
        assert c.get("/v2/health/live").status_code == 200
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 400 and ready.json() == {"ready": False}
        assert c.get("/v2/models/tiny/ready").json() == {"name": "tiny", "ready": False}
        assert "loading" in error_of(c.post(INFER, json={"inputs": [text_input("x")]}), 503)
        assert c.get("/v2").status_code == 200
        release.set()
        end = time.monotonic() + 20
        while c.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < end
            time.sleep(0.05)
        assert c.post(INFER, json={"inputs": [text_input("x")]}).status_code == 200
