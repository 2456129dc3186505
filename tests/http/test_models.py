"""GET /v1/models, /v1/models/{name}, /healthz, /docs: what a user reads before calling predict."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import LABELS, png_bytes, wav_bytes
from tests.server import Server, running_server


def test_models_list_describes_the_default_model(server: Server) -> None:
    with server.client() as c:
        body = c.get("/v1/models").json()
    assert body["default"] == "tiny"
    (info,) = body["models"]
    assert info["name"] == "tiny" and info["default"] is True
    assert info["labels"] == list(LABELS)
    assert info["modalities"] == ["image", "text", "audio"]
    assert info["fusion"] == "attention"
    assert info["encoders"] == {
        "image": "cnn",
        "text": "transformer over bytes tokens",
        "audio": "log-mel + tcnn",
    }
    assert info["parameters"] > 0
    assert info["device"] == "cpu"
    assert info["runtime"]["name"] == "torch" and info["runtime"]["requested"] == "torch"  # tests/conftest.py
    assert info["preprocessing"] == {
        "image_size": 16,
        "image_channels": 1,
        "sample_rate": 8000,
        "clip_seconds": 0.25,
        "max_text_tokens": 32,
        "tokenizer": "bytes",
    }
    assert info["limits"]["max_audio_seconds"] == 60.0
    assert info["metrics"]["accuracy"] == 0.5


def test_model_by_name(server: Server) -> None:
    with server.client() as c:
        assert c.get("/v1/models/tiny").json()["version"] == "0.0.1"
        missing = c.get("/v1/models/other")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("name", ["..", "..%2F..%2Fetc", "%2E%2E", "a" * 65])
def test_model_names_cannot_traverse_paths(server: Server, name: str) -> None:
    with server.client() as c:
        r = c.get(f"/v1/models/{name}")
    assert r.status_code in (404, 422)
    assert "error" in r.json()


def test_health(server: Server) -> None:
    with server.client() as c:
        assert c.get("/healthz").json() == {"status": "alive", "models": []}
        assert c.get("/readyz").json() == {"status": "ready", "models": ["tiny"]}


def test_unknown_route_uses_the_error_body(server: Server) -> None:
    with server.client() as c:
        r = c.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_openapi_offers_file_pickers_and_a_text_box(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    for path in ("/v1/predict", "/v1/models/{name}/predict"):
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        props = schema["properties"]
        assert props["image"]["format"] == "binary"
        assert props["audio"]["format"] == "binary"
        assert props["text"]["type"] == "string" and "format" not in props["text"]



def test_a_model_served_by_onnxruntime_says_so_and_answers_as_torch(exported: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(exported, models / "m")  # with its cached exports: nothing is exported again here
    request = {"image": ("x.png", png_bytes((16, 16), mode="L"), "image/png"), "text": (None, "a dog"),
               "audio": ("x.wav", wav_bytes(0.25), "audio/wav")}
    answers = {}
    for runtime in ("onnxruntime", "torch"):
        with running_server(models, runtime=runtime, runtime_cache_dir=str(tmp_path / "cache")) as s, s.client() as c:
            info = c.get("/v1/models/m").json()["runtime"]
            assert info["name"] == runtime and info["requested"] == runtime
            r = c.post("/v1/predict", files=request)
            assert r.status_code == 200, r.text
            answers[runtime] = r.json()["probabilities"]
            if runtime == "onnxruntime":
                assert info["onnx_parts"] == ["all", "audio", "fusion", "image", "text"]
                assert 0 <= info["parity"] <= 1e-4
    assert answers["onnxruntime"].keys() == answers["torch"].keys()
    assert max(abs(answers["onnxruntime"][k] - answers["torch"][k]) for k in answers["torch"]) < 1e-4
