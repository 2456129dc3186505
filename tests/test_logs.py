"""Structured logs: the JSON formatter, and `fusion-serve serve` writing JSON lines (its own and uvicorn's)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.logs import FIELDS, JsonFormatter


def record(message: str, fields: dict | None = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("app.test", logging.WARNING, __file__, 1, message, ("x",), exc_info)
    if fields is not None:
        setattr(rec, FIELDS, fields)
    return rec


def test_a_record_is_one_json_line_with_its_fields() -> None:
    line = JsonFormatter().format(record("hello %s", {"route": "/v1/predict", "modalities": ("image",), "n": 3}))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "hello x"
    assert entry["level"] == "warning" and entry["logger"] == "app.test"
    assert entry["route"] == "/v1/predict" and entry["modalities"] == ["image"] and entry["n"] == 3
    assert entry["ts"].endswith("+00:00")


def test_an_exception_stays_on_one_line() -> None:
    line = JsonFormatter().format(record("failed %s", exc=True))
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_writes_json_lines_and_one_access_line_per_request(models_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "FUSION_MODELS_DIR": str(models_dir),
        "FUSION_PORT": str(port),
        "FUSION_HOST": "127.0.0.1",
        "FUSION_MAX_BATCH_SIZE": "2",
        "FUSION_LOG_LEVEL": "info",
        "FUSION_DRAIN_DELAY_S": "0",
    }
    out = (tmp_path / "stdout").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, stdout=out, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < end, "the server did not become ready"
            time.sleep(0.1)
        r = httpx.post(f"{url}/v1/predict", files={"text": (None, "hi")}, headers={"X-Request-ID": "cli-1"})
        assert r.status_code == 200
        # with several workers the service says where it listens once every one is ready (one may answer first)
        while url not in Path(out.name).read_text() and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        proc.terminate()
        exit_code = proc.wait(30)
    assert exit_code == 0  # a graceful shutdown on SIGTERM
    lines = Path(out.name).read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is JSON
    # where to send requests, once: uvicorn's line with one worker, the supervisor's with several
    announced = [e["logger"] for e in entries
                 if url in e["message"] and ("running on" in e["message"] or "serving on" in e["message"])]
    assert announced in (["uvicorn.error"], ["app.http.supervisor"])
    access = [e for e in entries if e["logger"] == "app.access"]
    assert [(e["request_id"], e["route"], e["status"], e["modalities"], e["batch_size"]) for e in access] == [
        ("cli-1", "/v1/predict", 200, ["text"], 1)
    ]  # readiness probes are debug lines; uvicorn's own access log is off


def test_a_record_carries_the_request_id_it_was_logged_under() -> None:
    import contextvars

    from app.logs import REQUEST_ID, RequestIdFilter

    def log_one() -> dict:
        rec = record("inside %s")
        RequestIdFilter().filter(rec)
        return json.loads(JsonFormatter().format(rec))

    def in_request() -> dict:
        REQUEST_ID.set("req-9")
        return log_one()

    assert contextvars.copy_context().run(in_request)["request_id"] == "req-9"
    assert "request_id" not in log_one()  # outside any request (and the request's context did not leak)
