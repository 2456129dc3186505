"""GET /metrics through real HTTP: each request, batch, wait and rejection moves the right series by the right
amount."""
from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.engine.served import ServedModel
from tests.helpers import Gate, png_bytes, send, wav_bytes
from tests.server import Server, running_server

TEXT = {"text": (None, "hello there")}
ALL = {**TEXT, "image": ("a.png", png_bytes(), "image/png"), "audio": ("a.wav", wav_bytes(), "audio/wav")}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Samples:
    with server.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Delta:
    """How much each series moved between two scrapes."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)




def wait_queued(model: ServedModel, depth: int) -> None:
    end = time.monotonic() + 10
    while model.batcher.queue_depth < depth:
        assert time.monotonic() < end, "requests did not queue"
        time.sleep(0.01)


def test_requests_are_counted_by_route_template_and_status(server: Server) -> None:
    before = scrape(server)
    with server.client() as c:
        for _ in range(3):
            assert c.post("/v1/predict", files=TEXT).status_code == 200
        assert c.post("/v1/models/tiny/predict", files=ALL).status_code == 200
        assert c.post("/v1/predict", json={"text": "hi"}).status_code == 415
        assert c.get("/v1/models/nope").status_code == 404
        assert c.get("/no/such/route").status_code == 404
        assert c.get("/static/swagger-ui/swagger-ui.css").status_code == 200
    after = scrape(server)
    d = Delta(before, after)

    requests = "fusion_http_requests_total"
    assert d(requests, method="POST", route="/v1/predict", status="200") == 3
    assert d(requests, method="POST", route="/v1/models/{name}/predict", status="200") == 1
    assert d(requests, method="POST", route="/v1/predict", status="415") == 1
    assert d(requests, method="GET", route="/v1/models/{name}", status="404") == 1
    assert d(requests, method="GET", route="unmatched", status="404") == 1
    assert d(requests, method="GET", route="/static/swagger-ui/{path}", status="200") == 1  # a mounted app
    raw_paths = {dict(labels).get("route") for _, labels in after} - {None}
    assert not raw_paths & {"/v1/models/nope", "/v1/models/tiny/predict", "/no/such/route"}
    assert not [r for r in raw_paths if r.endswith(".css")]

    latency = "fusion_http_request_duration_seconds"
    assert d(f"{latency}_count", method="POST", route="/v1/predict") == 4
    assert d(f"{latency}_sum", method="POST", route="/v1/predict") > 0
    assert d(f"{latency}_bucket", method="POST", route="/v1/predict", le="+Inf") == 4

    # Sequential requests: four batches of one, each with one queue wait and one forward pass.
    assert d("fusion_batch_size_requests_count", model="tiny") == 4
    assert d("fusion_batch_size_requests_sum", model="tiny") == 4
    assert d("fusion_batch_size_requests_bucket", model="tiny", le="1.0") == 4
    assert d("fusion_inference_duration_seconds_count", model="tiny") == 4
    assert d("fusion_queue_wait_seconds_count", model="tiny") == 4
    assert value(after, "fusion_queued_requests", model="tiny") == 0
    assert value(after, "fusion_model_info", model="tiny", version="0.0.1", device="cpu") == 1


def test_a_shared_forward_pass_is_one_batch_of_two_and_the_queue_depth_shows(server: Server) -> None:
    model = server.served()
    before = scrape(server)
    with Gate(model) as hold, ThreadPoolExecutor(3) as pool:
        first = send(pool, server.url)
        assert hold.entered.wait(10)
        queued = [send(pool, server.url), send(pool, server.url)]
        wait_queued(model, 2)
        assert value(scrape(server), "fusion_queued_requests", model="tiny") == 2
        hold.release.set()
        assert [f.result().status_code for f in [first, *queued]] == [200, 200, 200]
    d = Delta(before, scrape(server))
    assert d("fusion_batch_size_requests_count", model="tiny") == 2  # [1], then [2]
    assert d("fusion_batch_size_requests_sum", model="tiny") == 3
    assert d("fusion_batch_size_requests_bucket", model="tiny", le="1.0") == 1
    assert d("fusion_batch_size_requests_bucket", model="tiny", le="2.0") == 2
    assert d("fusion_inference_duration_seconds_count", model="tiny") == 2
    assert d("fusion_queue_wait_seconds_count", model="tiny") == 3
    assert d("fusion_queue_wait_seconds_sum", model="tiny") > 0  # two of them waited for the held batch
    assert d("fusion_http_requests_total", method="POST", route="/v1/predict", status="200") == 3


@pytest.fixture()
def tight(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir, max_queue_size=2, request_timeout_s=1.0) as s:
        yield s


def test_rejections_are_counted_by_reason(tight: Server) -> None:
    model = tight.served()
    before = scrape(tight)
    with Gate(model) as hold, ThreadPoolExecutor(4) as pool:
        held = send(pool, tight.url)
        assert hold.entered.wait(10)
        queued = [send(pool, tight.url), send(pool, tight.url)]
        wait_queued(model, 2)
        assert send(pool, tight.url).result().status_code == 503  # queue full
        assert [f.result().status_code for f in queued] == [504, 504]  # the model stayed held past the deadline
        hold.release.set()
        assert held.result().status_code == 200
    d = Delta(before, scrape(tight))
    assert d("fusion_rejected_requests_total", model="tiny", reason="queue_full") == 1
    assert d("fusion_rejected_requests_total", model="tiny", reason="deadline") == 2
    assert d("fusion_http_requests_total", method="POST", route="/v1/predict", status="503") == 1
    assert d("fusion_http_requests_total", method="POST", route="/v1/predict", status="504") == 2
    assert d("fusion_batch_size_requests_count", model="tiny") == 1  # the expired ones never ran
    assert d("fusion_batch_size_requests_sum", model="tiny") == 1


def test_each_app_has_its_own_registry(models_dir: Path, server: Server) -> None:
    with server.client() as c:
        assert c.post("/v1/predict", files=TEXT).status_code == 200
    with running_server(models_dir) as other:
        fresh = scrape(other)
    assert value(scrape(server), "fusion_batch_size_requests_count", model="tiny") >= 1
    assert value(fresh, "fusion_batch_size_requests_count", model="tiny") == 0
    assert value(fresh, "fusion_rejected_requests_total", model="tiny", reason="queue_full") == 0


def test_openmetrics_when_the_scraper_asks(server: Server) -> None:
    with server.client() as c:
        r = c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
