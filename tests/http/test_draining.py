"""Draining (what SIGTERM starts, see tests/test_lifecycle.py for the real signal): no new admissions, every
admitted request finished, connections closed after their response."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.http.app import begin_draining
from tests.server import running_server

TEXT = {"text": (None, "hello")}


def test_draining_refuses_new_work_and_finishes_admitted_work(models_dir: Path) -> None:
    with running_server(models_dir) as s:
        model = s.served()
        original = model.predictor.predict
        entered, release = threading.Event(), threading.Event()

        def held(samples: list) -> list:
            entered.set()
            assert release.wait(20)
            return original(samples)

        model.predictor.predict = held  # type: ignore[method-assign]
        with ThreadPoolExecutor(2) as pool, httpx.Client(base_url=s.url, timeout=30) as c:
            before = c.get("/healthz")
            admitted = pool.submit(c.post, "/v1/predict", files=TEXT)
            assert entered.wait(10)
            begin_draining(s.app)
            ready = c.get("/readyz")
            refused = c.post("/v1/predict", files=TEXT)
            alive = c.get("/healthz")
            release.set()
            done = admitted.result()
        del model.predictor.predict

    assert before.headers.get("connection") != "close"
    assert ready.status_code == 503 and ready.json()["status"] == "shutting_down"
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == {
        "code": "not_ready",
        "message": "the service is shutting down; retry on another replica",
        "request_id": refused.headers["x-request-id"],
    }
    assert alive.status_code == 200  # still alive: liveness must not restart a draining process
    assert done.status_code == 200  # admitted before the drain: computed and answered
    for r in (ready, refused, alive, done):
        assert r.headers["connection"] == "close"  # clients reconnect (elsewhere) instead of reusing it
