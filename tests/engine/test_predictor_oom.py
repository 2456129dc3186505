"""Out of GPU memory: a batch is split in halves and retried, down to single samples, before anything fails.
The OOM is injected on the CPU by making the model's forward raise torch.cuda.OutOfMemoryError."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine.predictor import Predictor, Scores
from app.model.artifact import load_artifact
from app.model.batch import Sample
from tests.helpers import tiny_spec, write_tiny_artifact
from tests.server import Server

TEXT = {"text": (None, "hello there")}


@pytest.fixture()
def predictor(tmp_path: Path) -> Predictor:
    return Predictor(load_artifact(write_tiny_artifact(tmp_path / "m", tiny_spec(name="m"))), torch.device("cpu"))


def samples(predictor: Predictor, n: int) -> list[Sample]:
    out = []
    for i in range(n):
        s = predictor.example_sample()
        out.append(Sample(image=s.image + i / 10, text=s.text, audio=s.audio))  # distinct inputs, distinct outputs
    return out


def fail_above(predictor: Predictor, limit: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every forward pass over more than `limit` rows raise CUDA OOM; returns the sizes attempted."""
    attempts: list[int] = []
    forward = predictor.model.forward

    def forward_or_oom(batch):  # noqa: ANN001, ANN202
        attempts.append(batch.size)
        if batch.size > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(batch)

    monkeypatch.setattr(predictor.model, "forward", forward_or_oom)
    return attempts


def test_an_oom_batch_is_split_until_it_fits(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = samples(predictor, 8)
    expected = predictor.predict(batch)
    attempts = fail_above(predictor, 2, monkeypatch)
    got = predictor.predict(batch)
    assert attempts == [8, 4, 2, 2, 4, 2, 2]
    assert predictor.oom_splits == 3
    assert len(got) == 8
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)  # same answers, same order


def test_odd_sizes_split_down_to_single_samples(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = fail_above(predictor, 1, monkeypatch)
    assert len(predictor.predict(samples(predictor, 5))) == 5
    assert attempts == [5, 2, 1, 1, 3, 1, 2, 1, 1]  # 5 -> 2 + 3, 3 -> 1 + 2, every sample once at size 1


def test_a_single_sample_that_does_not_fit_raises(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_above(predictor, 0, monkeypatch)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        predictor.predict(samples(predictor, 4))


def test_other_errors_are_not_retried(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(batch):  # noqa: ANN001, ANN202
        calls.append(batch.size)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(predictor.model, "forward", broken)
    with pytest.raises(RuntimeError):
        predictor.predict(samples(predictor, 4))
    assert calls == [4]


def test_through_http_a_batch_that_hits_oom_is_answered_in_full(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = server.served()
    predictor = model.predictor
    attempts = fail_above(predictor, 1, monkeypatch)
    release = threading.Event()
    original = predictor.predict
    held: list[int] = []

    def hold_first(batch: list[Sample], explain: Sequence[bool] = ()) -> list[Scores]:
        if not held:  # hold the first batch so that the next requests queue up and form one batch
            held.append(len(batch))
            assert release.wait(20)
        return original(batch, explain)

    monkeypatch.setattr(predictor, "predict", hold_first)
    splits_before = predictor.oom_splits
    with ThreadPoolExecutor(6) as pool, server.client() as c:
        first = pool.submit(c.post, "/v1/predict", files=TEXT)
        while not held:
            time.sleep(0.01)
        rest = [pool.submit(c.post, "/v1/predict", files=TEXT) for _ in range(4)]
        while model.batcher.queue_depth < 4:
            time.sleep(0.01)
        release.set()
        responses = [first.result(), *(f.result() for f in rest)]
    assert [r.status_code for r in responses] == [200] * 5
    assert max(r.json()["timing"]["batch_size"] for r in responses) == 4  # they ran as one batch of 4...
    assert predictor.oom_splits - splits_before == 3  # ...split 4 -> 2 + 2 -> 1 + 1 + 1 + 1
    assert 4 in attempts


def test_through_http_an_oom_on_one_sample_is_a_500_and_the_service_recovers(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = server.served().predictor
    forward = predictor.model.forward
    fail_above(predictor, 0, monkeypatch)
    with server.client() as c:
        r = c.post("/v1/predict", files=TEXT, headers={"X-Request-ID": "oom-1"})
        assert r.status_code == 500
        assert r.json()["error"] == {
            "code": "model_failure",
            "message": "the model failed on the batch holding this request; retry it",
            "request_id": "oom-1",
        }
        monkeypatch.setattr(predictor.model, "forward", forward)
        assert c.post("/v1/predict", files=TEXT).status_code == 200
