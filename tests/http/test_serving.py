"""Batching, overload, deadlines, failures, disconnects and readiness, observed through real HTTP."""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.engine import pipeline
from app.host import LARGE_DECODE_NICENESS
from tests.helpers import TEXT, Gate, send, wait_queue
from tests.server import Server, running_server


@pytest.fixture()
def tight(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir, max_queue_size=2, request_timeout_s=1.0) as s:
        yield s


def test_concurrent_requests_share_one_forward_pass(server: Server) -> None:
    model = server.served()
    with Gate(model) as gate, ThreadPoolExecutor(4) as pool:
        first = send(pool, server.url)
        assert gate.entered.wait(10)
        a, b = send(pool, server.url), send(pool, server.url)
        wait_queue(model, 2)
        passes_before = model.predictor.forward_passes
        gate.release.set()
        ra, rb = a.result(), b.result()
        assert first.result().status_code == 200
    assert ra.status_code == rb.status_code == 200
    assert ra.json()["timing"]["batch_size"] == rb.json()["timing"]["batch_size"] == 2
    assert gate.batch_sizes == [1, 2]
    assert model.predictor.forward_passes == passes_before + 2  # the held one, then one for both


def test_full_queue_answers_503_with_retry_after_at_once(tight: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tight.served()
    decoded: list[object] = []
    original = pipeline.prepare_sample
    monkeypatch.setattr(pipeline, "prepare_sample", lambda *a: decoded.append(a) or original(*a))
    with Gate(model) as gate, ThreadPoolExecutor(4) as pool:
        held = send(pool, tight.url)
        assert gate.entered.wait(10)
        queued = [send(pool, tight.url) for _ in range(2)]
        wait_queue(model, 2)
        t0 = time.monotonic()
        with tight.client() as c:
            r = c.post("/v1/predict", files=TEXT)
        assert time.monotonic() - t0 < 5  # answered while the model is still held
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1
        gate.release.set()
        assert [f.result().status_code for f in [held, *queued]] == [200, 200, 200]
    assert len(decoded) == 3  # the three admitted; the refused upload was not even decoded


def test_request_that_waited_too_long_gets_504_and_is_not_computed(tight: Server) -> None:
    model = tight.served()
    with Gate(model) as gate, ThreadPoolExecutor(4) as pool:
        held = send(pool, tight.url)
        assert gate.entered.wait(10)
        late = send(pool, tight.url).result()  # the model stays held past the 1 s deadline
        assert late.status_code == 504
        assert late.json()["error"]["code"] == "deadline_exceeded"
        gate.release.set()
        assert held.result().status_code == 200
    assert gate.batch_sizes == [1]


def test_failing_batch_gives_500_with_request_id_then_service_recovers(server: Server) -> None:
    model = server.served()
    calls = {"n": 0}
    original = model.predictor.predict

    def broken(samples: list) -> list:
        calls["n"] += 1
        raise RuntimeError("/secret/path/model.py exploded")

    model.predictor.predict = broken  # type: ignore[method-assign]
    try:
        with server.client() as c:
            r = c.post("/v1/predict", files=TEXT, headers={"X-Request-ID": "req-42"})
    finally:
        model.predictor.predict = original  # type: ignore[method-assign]
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "model_failure" and err["request_id"] == "req-42"
    assert "/secret" not in r.text and "Traceback" not in r.text
    with server.client() as c:
        assert c.post("/v1/predict", files=TEXT).status_code == 200
    assert calls["n"] == 1


def test_request_whose_client_left_is_skipped(server: Server) -> None:
    model = server.served()
    with Gate(model) as gate, ThreadPoolExecutor(4) as pool:
        held = send(pool, server.url)
        assert gate.entered.wait(10)
        gone = send(pool, server.url, timeout=0.3)
        with pytest.raises(httpx.TimeoutException):
            gone.result()
        time.sleep(0.2)  # let the server notice the disconnect
        gate.release.set()
        assert held.result().status_code == 200
        with server.client() as c:
            assert c.post("/v1/predict", files=TEXT).status_code == 200
    assert gate.batch_sizes == [1, 1]  # the held request, then the last one: the abandoned one never ran


def test_readyz_is_503_until_warm(models_dir: Path, held_warmup: threading.Event) -> None:
    release = held_warmup
    with running_server(models_dir, wait_ready=False) as s, s.client() as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        p = c.post("/v1/predict", files=TEXT)
        assert p.status_code == 503 and p.json()["error"]["code"] == "not_ready"
        release.set()
        end = time.monotonic() + 20
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < end
            time.sleep(0.05)
        assert c.get("/readyz").json()["models"] == ["tiny"]
        assert c.post("/v1/predict", files=TEXT).status_code == 200


@pytest.fixture(params=[0, 2], ids=["decode-in-inference-thread", "decode-pool"])
def decoding(request: pytest.FixtureRequest, models_dir: Path) -> Iterator[Server]:
    """The service with each placement of decoding: in the inference thread with the batch, or in a pool."""
    with running_server(models_dir, preprocess_workers=request.param) as s:
        yield s


def test_a_corrupt_upload_fails_alone_and_its_batch_mates_are_served(decoding: Server) -> None:
    model = decoding.served()
    corrupt = {"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png"), "text": (None, "seven")}
    with Gate(model) as gate, ThreadPoolExecutor(4) as pool:
        held = send(pool, decoding.url)
        assert gate.entered.wait(10)
        good, bad = send(pool, decoding.url), send(pool, decoding.url, files=corrupt)
        if decoding.settings.preprocess_workers == 0:  # decoded with the batch, so it queues like any request
            wait_queue(model, 2)
        else:  # refused by the pool before it is queued
            assert bad.result().status_code == 422
        gate.release.set()
        assert held.result().status_code == good.result().status_code == 200
        r = bad.result()
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "corrupt_input"
    assert "image" in r.json()["error"]["message"]
    assert good.result().json()["timing"]["preprocess_ms"] > 0


def test_request_with_bad_form_does_not_hold_up_the_batch(server: Server) -> None:
    # The route announces each request while its upload arrives; a refused upload must withdraw its announcement,
    # or the next idle batch would wait for it (up to max_wait) for nothing.
    model = server.served()
    with server.client() as c:
        r = c.post("/v1/predict", files={"bogus": (None, "x")})
        assert r.status_code == 422
        r = c.post("/v1/predict", content=b"not multipart", headers={"content-type": "text/plain"})
        assert r.status_code == 415
    assert model.batcher.announced == 0


def _large_png() -> bytes:
    """A PNG of at least LARGE_SAMPLE_BYTES (noise does not compress)."""
    import io

    import numpy as np
    from PIL import Image

    side = 640
    noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buffer, "PNG")
    assert buffer.tell() >= pipeline.LARGE_SAMPLE_BYTES
    return buffer.getvalue()


def test_a_large_upload_is_decoded_apart_and_does_not_hold_up_a_small_request(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a decode pool a small sample is decoded in the inference thread, with its batch; a large one (a phone
    # photo) is decoded on a thread of its own before it is queued. Its decoding is made slow here: a small request
    # sent meanwhile must be answered without waiting for it, as it would if the photo sat in its batch. That
    # thread runs at a lower priority than the rest of the process (Linux), so that it takes little CPU from them.
    real, started, threads, niceness = pipeline.prepare_sample, threading.Event(), [], []

    def slow_when_large(preprocessor, raw, limits, budget=None):  # noqa: ANN001, ANN202 - prepare_sample's own
        if pipeline.sample_bytes(raw) >= pipeline.LARGE_SAMPLE_BYTES:
            threads.append(threading.current_thread().name)
            niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            started.set()
            time.sleep(2.0)
        return real(preprocessor, raw, limits, budget)

    monkeypatch.setattr(pipeline, "prepare_sample", slow_when_large)
    photo = {"image": ("photo.png", _large_png(), "image/png"), "text": (None, "seven")}
    with running_server(models_dir, preprocess_workers=0) as s, ThreadPoolExecutor(2) as pool:
        large = send(pool, s.url, files=photo)
        assert started.wait(10)
        t0 = time.monotonic()
        small = send(pool, s.url).result()
        waited = time.monotonic() - t0
        assert small.status_code == 200
        assert waited < 1.0, f"the small request waited {waited:.2f} s behind the large upload's decoding"
        assert not large.done()
        assert large.result().status_code == 200
    assert len(threads) == 1 and threads[0].startswith("preprocess-large")
    if sys.platform == "linux":
        assert niceness == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + LARGE_DECODE_NICENESS)]
