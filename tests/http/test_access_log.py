"""The access log through real HTTP: one structured record per request, facts from the route included."""
from __future__ import annotations

import logging
import time

import pytest

from app.logs import FIELDS
from tests.helpers import png_bytes
from tests.server import Server

ACCESS = "app.access"


def access_entries(caplog: pytest.LogCaptureFixture, request_id: str, wait: bool = True) -> list[tuple[int, dict]]:
    """The access records of one request. The line is written once the response has gone out, so the client can
    read the response first: wait (a little) for it unless none is expected."""
    end = time.monotonic() + (5 if wait else 0)
    while True:
        found = [
            (r.levelno, getattr(r, FIELDS))
            for r in caplog.records
            if r.name == ACCESS and getattr(r, FIELDS, {}).get("request_id") == request_id
        ]
        if found or time.monotonic() >= end:
            return found
        time.sleep(0.01)


def test_one_line_per_predict_with_modalities_batch_size_and_latency(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    files = {"image": ("a.png", png_bytes(), "image/png"), "text": (None, "a dog")}
    with server.client() as c:
        r = c.post("/v1/models/tiny/predict", files=files, headers={"X-Request-ID": "log-ok-1"})
    assert r.status_code == 200
    ((level, entry),) = access_entries(caplog, "log-ok-1")
    assert level == logging.INFO
    assert entry["method"] == "POST"
    assert entry["route"] == "/v1/models/{name}/predict"
    assert entry["status"] == 200
    assert entry["modalities"] == ["image", "text"]
    assert entry["batch_size"] == r.json()["timing"]["batch_size"] == 1
    assert entry["latency_ms"] > 0


def test_refused_requests_are_logged_with_what_is_known(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    with server.client() as c:
        c.post("/v1/predict", json={"text": "hi"}, headers={"X-Request-ID": "log-415"})
        c.post("/v1/predict", files={"image": ("a.png", b"junk")}, headers={"X-Request-ID": "log-corrupt"})
    ((_, not_multipart),) = access_entries(caplog, "log-415")
    assert (not_multipart["status"], not_multipart["modalities"], not_multipart["batch_size"]) == (415, None, None)
    ((_, corrupt),) = access_entries(caplog, "log-corrupt")
    assert (corrupt["status"], corrupt["modalities"], corrupt["batch_size"]) == (415, ["image"], None)


def test_probes_are_debug_lines(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    with server.client() as c:
        c.get("/healthz", headers={"X-Request-ID": "probe-info"})
    assert access_entries(caplog, "probe-info", wait=False) == []
    caplog.set_level(logging.DEBUG, logger=ACCESS)
    with server.client() as c:
        c.get("/readyz", headers={"X-Request-ID": "probe-debug"})
    ((level, entry),) = access_entries(caplog, "probe-debug")
    assert level == logging.DEBUG and entry["route"] == "/readyz" and entry["status"] == 200
