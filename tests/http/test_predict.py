"""POST /v1/predict through real HTTP: every modality subset, every fusion type, the response a client reads."""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.model.spec import FUSION_TYPES, MODALITIES
from tests.helpers import LABELS, png_bytes, wav_bytes
from tests.server import Server, running_server

PARTS = {
    "image": ("photo.png", png_bytes(), "image/png"),
    "text": (None, "a small dog barking"),
    "audio": ("clip.wav", wav_bytes(), "audio/wav"),
}
SUBSETS = [c for r in (1, 2, 3) for c in itertools.combinations(MODALITIES, r)]


def parts(*modalities: str) -> dict[str, tuple]:
    """A multipart form with the given fields (text as a plain field, files with names and types)."""
    return {m: PARTS[m] for m in modalities}


def assert_prediction(body: dict, modalities: tuple[str, ...], model: str) -> None:
    assert body["model"] == model
    assert set(body["probabilities"]) == set(LABELS)
    assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-5)
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"].values())
    assert body["modalities"] == list(modalities)
    top = [t["probability"] for t in body["top"]]
    assert top == sorted(top, reverse=True)
    assert body["top"][0]["probability"] == max(body["probabilities"].values())
    timing = body["timing"]
    assert timing["batch_size"] >= 1
    assert timing["total_ms"] >= timing["inference_ms"] >= 0


@pytest.mark.parametrize("modalities", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_every_modality_subset_is_answered(server: Server, modalities: tuple[str, ...]) -> None:
    with server.client() as c:
        r = c.post("/v1/predict", files=parts(*modalities))
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), modalities, "tiny")
    assert r.headers["x-request-id"]


def test_missing_modality_changes_the_answer(server: Server) -> None:
    """The model really uses each input: dropping one changes the probabilities."""
    with server.client() as c:
        full = c.post("/v1/predict", files=parts(*MODALITIES)).json()["probabilities"]
        for m in MODALITIES:
            rest = tuple(x for x in MODALITIES if x != m)
            partial = c.post("/v1/predict", files=parts(*rest)).json()["probabilities"]
            assert partial != full


def test_same_input_same_answer(server: Server) -> None:
    with server.client() as c:
        a = c.post("/v1/predict", files=parts(*MODALITIES)).json()["probabilities"]
        b = c.post("/v1/predict", files=parts(*MODALITIES)).json()["probabilities"]
    assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("k,expected", [(1, 1), (2, 2), (50, len(LABELS))])
def test_top_k(server: Server, k: int, expected: int) -> None:
    with server.client() as c:
        r = c.post("/v1/predict", params={"top_k": k}, files=parts("text"))
    assert r.status_code == 200
    assert len(r.json()["top"]) == expected


def test_default_top_k_lists_up_to_five(server: Server) -> None:
    with server.client() as c:
        assert len(c.post("/v1/predict", files=parts("text")).json()["top"]) == min(5, len(LABELS))


def test_bad_top_k_is_422(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/predict", params={"top_k": 0}, files=parts("text"))
    assert r.status_code == 422
    assert "top_k" in r.json()["error"]["message"]


def test_request_id_is_honoured(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/predict", files=parts("text"), headers={"X-Request-ID": "abc-123"})
        bad = c.post("/v1/predict", files={}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert bad.json()["error"]["request_id"] == "abc-123"


@pytest.fixture(scope="module")
def zoo(zoo_dir: Path) -> Iterator[Server]:
    with running_server(zoo_dir, default_model="fusion-attention") as s:
        yield s


@pytest.mark.parametrize("fusion", FUSION_TYPES)
@pytest.mark.parametrize("modalities", [("image",), ("text", "audio"), MODALITIES], ids=["image", "text+audio", "all"])
def test_every_fusion_type_serves(zoo: Server, fusion: str, modalities: tuple[str, ...]) -> None:
    name = f"fusion-{fusion}"
    with zoo.client() as c:
        r = c.post(f"/v1/models/{name}/predict", files=parts(*modalities))
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), modalities, name)


def test_default_model_of_several(zoo: Server) -> None:
    with zoo.client() as c:
        assert c.post("/v1/predict", files=parts("text")).json()["model"] == "fusion-attention"


def test_unknown_model_is_404(zoo: Server) -> None:
    with zoo.client() as c:
        r = c.post("/v1/models/nope/predict", files=parts("text"))
    assert r.status_code == 404
    assert "GET /v1/models" in r.json()["error"]["message"]


def test_modality_the_model_lacks_is_422(zoo: Server) -> None:
    with zoo.client() as c:
        r = c.post("/v1/models/no-audio/predict", files=parts("text", "audio"))
        ok = c.post("/v1/models/no-audio/predict", files=parts("image", "text"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "modality_not_supported"
    assert "audio" in r.json()["error"]["message"]
    assert ok.status_code == 200
