"""The real process under stress: load at 4x its capacity, SIGTERM under load, a broken artifact at startup.
Every request sent is counted against the answers it got."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import write_tiny_artifact
from tests.process import ROOT, free_port, serve_env, serve_process

pytestmark = pytest.mark.slow
TEXT = {"text": (None, "hello there")}


def predict_counts(metrics: str) -> tuple[int, int]:
    """(answered /v1/predict requests, queue_full rejections) as the server counted them."""
    answered = sum(
        float(m.group(1))
        for m in re.finditer(r'^fusion_http_requests_total\{[^}]*route="/v1/predict"[^}]*\} (\S+)$', metrics, re.M)
    )
    rejected = sum(
        float(m.group(1))
        for m in re.finditer(r'^fusion_rejected_requests_total\{[^}]*reason="queue_full"[^}]*\} (\S+)$', metrics, re.M)
    )
    return int(answered), int(rejected)


def test_four_times_capacity_gets_only_quick_503s_and_a_bounded_latency(models_dir: Path, tmp_path: Path) -> None:
    forward_s, batch, queue = 0.1, 2, 8
    capacity = batch / forward_s  # 20 requests/s
    rate, seconds = 4 * capacity, 5.0
    with serve_process(models_dir, tmp_path, forward_s=forward_s, max_batch_size=batch, max_queue_size=queue,
                       warmup="false", log_level="info") as server:
        with httpx.Client(base_url=server.url) as c:
            for _ in range(3):
                assert c.post("/v1/predict", files=TEXT).status_code == 200
            rss_before = server.rss_bytes()
            answered_before, _ = predict_counts(c.get("/metrics").text)

        results: list[tuple[str, float, httpx.Response | None]] = []

        async def one(client: httpx.AsyncClient) -> None:
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/predict", files=TEXT)
                results.append((str(r.status_code), time.perf_counter() - t0, r))
            except httpx.HTTPError as exc:
                results.append((type(exc).__name__, time.perf_counter() - t0, None))

        async def open_loop() -> float:
            limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                tasks, start = [], time.perf_counter()
                for i in range(int(rate * seconds)):
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                    tasks.append(asyncio.create_task(one(client)))
                offered = len(tasks) / (time.perf_counter() - start)
                await asyncio.gather(*tasks)
                return offered

        offered = asyncio.run(open_loop())
        sent = int(rate * seconds)
        statuses = Counter(status for status, _, _ in results)
        with httpx.Client(base_url=server.url) as c:
            answered, rejected = predict_counts(c.get("/metrics").text)
        rss_growth = server.rss_bytes() - rss_before
        log = server.log()

    ok_latencies = sorted(t for status, t, _ in results if status == "200")
    p99 = ok_latencies[int(0.99 * (len(ok_latencies) - 1))]
    print(f"\noverload: offered {offered:.0f}/s to a capacity of {capacity:.0f}/s; sent {sent}, answered "
          f"{dict(statuses)}, server counted {answered - answered_before} answers, {rejected} queue_full; "
          f"p99 of 200s {p99 * 1e3:.0f} ms; RSS +{rss_growth / 2**20:.1f} MiB")
    assert offered > 3.5 * capacity  # the load really was about 4x
    assert len(results) == sent and set(statuses) <= {"200", "503"}, statuses  # one HTTP answer each, no errors
    assert answered - answered_before == sent  # and the server answered each exactly once
    for _, _, r in results:
        if r is not None and r.status_code == 503:
            assert r.json()["error"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
    assert statuses["503"] == rejected  # every 503 came from admission control
    assert statuses["200"] >= 0.5 * capacity * seconds  # it kept serving at about its capacity meanwhile
    # Admitted requests wait for at most queue/batch batches ahead of them; far below the 10 s deadline.
    assert p99 < 3.0
    assert rss_growth < 150 * 2**20
    warnings = [e for e in log if e["level"] == "warning" and e["message"].startswith("overloaded")]
    assert len(warnings) == statuses["503"] and all(e.get("request_id") for e in warnings)


def test_sigterm_under_load_loses_no_request(models_dir: Path, tmp_path: Path) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(url: str) -> None:
        """A client that honours Retry-After and stops once connections are refused."""
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/predict", files=TEXT)
                    outcome = str(r.status_code)
                    if r.status_code == 503:
                        outcome += ":" + r.json()["error"]["code"]
                except httpx.ConnectError:
                    outcome = "refused"
                except httpx.HTTPError as exc:
                    outcome = f"broken:{type(exc).__name__}"
                with lock:
                    outcomes.append(outcome)
                if outcome == "refused" or outcome.startswith("broken"):
                    return
                if outcome.startswith("503"):
                    time.sleep(float(r.headers.get("retry-after", "1")))

    with serve_process(models_dir, tmp_path, forward_s=0.2, max_batch_size=4, drain_delay_s=1.5, warmup="false",
                       log_level="info") as server:
        workers = [threading.Thread(target=client_loop, args=(server.url,)) for _ in range(8)]
        for w in workers:
            w.start()
        while sum(o == "200" for o in outcomes) < 16:
            time.sleep(0.05)
        answered_before = len(outcomes)
        server.terminate()
        readiness: list[int] = []
        end = time.monotonic() + 30
        while any(w.is_alive() for w in workers) and time.monotonic() < end:
            try:
                readiness.append(httpx.get(f"{server.url}/readyz", timeout=5).status_code)
            except httpx.TransportError:
                readiness.append(0)
            time.sleep(0.1)
        stop.set()
        for w in workers:
            w.join(30)
        exit_code = server.proc.wait(30)
        log = server.log()

    counts = Counter(outcomes)
    after = Counter(outcomes[answered_before:])
    print(f"\nSIGTERM: sent {len(outcomes)}: {dict(counts)}; after SIGTERM {dict(after)}; "
          f"readiness {Counter(readiness)}")
    assert not [o for o in outcomes if o.startswith("broken")], counts  # no reset, no request cut short
    assert set(counts) <= {"200", "503:not_ready", "refused"}
    assert after["200"] >= 1  # requests admitted before SIGTERM were finished after it...
    assert after["503:not_ready"] >= 1  # ...new ones were refused while draining...
    assert counts["refused"] == len(workers)  # ...and once the listener closed, connections were refused
    assert 503 in readiness and readiness[-1] == 0  # /readyz went 503 before the listener closed
    assert exit_code == 0
    access = [e for e in log if e["logger"] == "app.access" and e["route"] == "/v1/predict"]
    assert len(access) == counts["200"] + counts["503:not_ready"]  # the server answered each request once
    assert any("draining" in e["message"] for e in log)


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("missing-weights", r"weights.safetensors: missing"),
        ("bad-json", r"config.json: not valid JSON"),
        ("wrong-shapes", r"weights.safetensors: weights do not match config.json: wrong shapes"),
    ],
)
def test_a_broken_artifact_stops_the_real_process_naming_the_file(
    tmp_path: Path, breakage: str, message: str
) -> None:
    folder = write_tiny_artifact(tmp_path / "models" / "broken")
    if breakage == "missing-weights":
        (folder / "weights.safetensors").unlink()
    elif breakage == "bad-json":
        (folder / "config.json").write_text("{not json")
    else:
        config = json.loads((folder / "config.json").read_text())
        config["labels"] = ["a", "b", "c", "d"]
        (folder / "config.json").write_text(json.dumps(config))
    env = serve_env(tmp_path / "models", free_port())
    result = subprocess.run([sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    criticals = [e for e in lines if e["level"] == "critical"]  # one per process that loads the models
    assert criticals
    for critical in criticals:
        assert re.search(message, critical["message"]) and str(folder) in critical["message"]
        assert critical["message"].startswith("cannot start: ")
