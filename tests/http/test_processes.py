"""The multi-process service as users run it: workers behind one port, model owners fed by every worker, restarts,
drain, readiness and metrics across processes."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import png_bytes, wav_bytes
from tests.process import ServeProcess, serve_process

pytestmark = pytest.mark.slow

FILES = {"image": ("a.png", png_bytes()), "text": (None, "a cat"), "audio": ("a.wav", wav_bytes())}


def children(server: ServeProcess) -> dict[str, int]:
    """The service's processes by name (from their own log lines: worker-N, owner-N), latest pid of each."""
    pids: dict[str, int] = {}
    for entry in server.log():
        if entry.get("message", "").startswith("process started, pid "):
            pids[entry["process"]] = int(entry["message"].rsplit(" ", 1)[1])
    return pids


def wait_ready(url: str, timeout_s: float = 240) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("not ready again")


def predict(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files=FILES, timeout=60)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_workers_share_the_port_and_the_metrics(models_dir: Path, tmp_path: Path) -> None:
    with serve_process(models_dir, tmp_path, workers=2, model_placement="per_worker", log_level="info") as server:
        with ThreadPoolExecutor(8) as pool:
            statuses = Counter(r.status_code for r in pool.map(lambda _: predict(server.url), range(40)))
        text = httpx.get(f"{server.url}/metrics").text
        log = server.log()
    assert statuses == {200: 40}
    served_by = Counter(e["process"] for e in log if e.get("logger") == "app.access" and e["route"] == "/v1/predict")
    assert set(served_by) == {"worker-0", "worker-1"}, served_by  # both workers took requests on the one port
    # Whichever worker answered /metrics counted every worker's requests, under the single-process names.
    assert metric(text, "fusion_http_requests_total", route="/v1/predict", status="200") == 40
    assert metric(text, "fusion_batch_size_requests_sum", model="tiny") == 40
    assert metric(text, "fusion_model_info", model="tiny") == 1


def test_batches_form_across_workers_in_the_model_owner(models_dir: Path, tmp_path: Path) -> None:
    # 13 requests a round: the first keeps the owner busy for 1 s while the other 12 arrive through both workers
    # and queue there together. Which worker accepts each connection is the kernel's choice, and a loaded machine
    # may deliver the uploads slowly: up to three rounds, one of which must show a batch fed by both workers.
    rounds = []
    with serve_process(models_dir, tmp_path, forward_s=1.0, workers=2, model_placement="owner", max_batch_size=16,
                       log_level="info") as server:
        for _ in range(3):
            first = threading.Thread(target=predict, args=(server.url,))
            first.start()
            time.sleep(0.2)
            with ThreadPoolExecutor(12) as pool:
                responses = list(pool.map(lambda _: predict(server.url), range(12)))
            first.join()
            assert all(r.status_code == 200 for r in responses)
            ids = {r.headers["x-request-id"] for r in responses}
            access = [e for e in server.log() if e.get("logger") == "app.access" and e.get("request_id") in ids]
            largest = max(e["batch_size"] for e in access)
            # only one batch of a round can hold 7 or more of its 13: if both workers served requests of that size,
            # that one batch took requests from both
            rounds.append((largest, sorted({e["process"] for e in access if e["batch_size"] == largest})))
            if largest >= 7 and rounds[-1][1] == ["worker-0", "worker-1"]:
                return
    raise AssertionError(f"no batch of 7+ fed by both workers in 3 rounds (largest batch, its workers): {rounds}")


def test_a_killed_worker_is_restarted_and_the_service_keeps_answering(models_dir: Path, tmp_path: Path) -> None:
    with serve_process(models_dir, tmp_path, workers=2, model_placement="per_worker", log_level="info") as server:
        victim = children(server)["worker-1"]
        os.kill(victim, signal.SIGKILL)
        answers = Counter(predict(server.url).status_code for _ in range(10))  # the other worker answers
        wait_ready(server.url)
        restarted = children(server)["worker-1"]
        assert predict(server.url).status_code == 200
        log = server.log()
    assert answers == {200: 10}
    assert restarted != victim
    assert any("worker-1 exited with status -9; restarting it" in e["message"] for e in log)


def test_a_killed_model_owner_fails_its_requests_fast_then_comes_back(models_dir: Path, tmp_path: Path) -> None:
    with serve_process(models_dir, tmp_path, forward_s=1.0, workers=1, model_placement="owner",
                       log_level="info") as server:
        owner = children(server)["owner-0"]
        with ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(predict, server.url) for _ in range(4)]
            time.sleep(0.5)  # they are in the owner now, one computing, three queued
            t0 = time.monotonic()
            os.kill(owner, signal.SIGKILL)
            failed = [f.result() for f in pending]
            waited = time.monotonic() - t0
        assert {r.status_code for r in failed} == {503}, [r.text for r in failed]
        assert all(r.headers.get("retry-after") == "1" for r in failed)
        assert waited < 5  # failed when the owner went away, not at some timeout
        wait_ready(server.url)
        assert predict(server.url).status_code == 200
        assert children(server)["owner-0"] != owner


def test_sigterm_drains_every_worker_and_exits_0(models_dir: Path, tmp_path: Path) -> None:
    # 2 s per batch: all six must be admitted (four queued) while the first batch computes, even on a loaded machine.
    with serve_process(models_dir, tmp_path, forward_s=2.0, workers=2, model_placement="owner", drain_delay_s=1,
                       max_batch_size=2, log_level="info") as server:
        with ThreadPoolExecutor(6) as pool:
            pending = [pool.submit(predict, server.url) for _ in range(6)]
            end = time.monotonic() + 60
            while metric(httpx.get(f"{server.url}/metrics").text, "fusion_queued_requests") < 4:  # all admitted
                assert time.monotonic() < end, "the requests did not queue"
                time.sleep(0.05)
            server.terminate()
            time.sleep(0.3)
            during = httpx.get(f"{server.url}/readyz", timeout=5).status_code
            answered = [f.result().status_code for f in pending]
        code = server.proc.wait(60)
    assert during == 503  # readiness fails at once, on every worker
    assert answered == [200] * 6  # the admitted requests were finished (3 batches of 2, 2 s each)
    assert code == 0


def test_workers_and_owners_stop_when_the_supervisor_is_killed(models_dir: Path, tmp_path: Path) -> None:
    with serve_process(models_dir, tmp_path, workers=2, model_placement="owner", drain_delay_s=0,
                       log_level="info") as server:
        pids = children(server)
        assert set(pids) == {"worker-0", "worker-1", "owner-0"}
        os.kill(server.proc.pid, signal.SIGKILL)  # not a drain: gone at once, as in an out-of-memory kill
        end = time.monotonic() + 60
        while (alive := [n for n, pid in pids.items() if Path(f"/proc/{pid}").exists()
                         and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]):
            assert time.monotonic() < end, f"still running without their supervisor: {alive}"
            time.sleep(0.2)
