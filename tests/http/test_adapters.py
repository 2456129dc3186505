"""/v1 and /v2 are thin adapters over one engine call: checked with a fake engine, over real HTTP, without torch."""
from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import Overloaded
from app.inputs.parts import RawInputs
from tests.fakes import LABELS, FakeEngine, expected_probabilities, fake_engine_factory
from tests.server import Server, running_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def fake(tmp_path: Path) -> Iterator[tuple[Server, FakeEngine]]:
    engines: list[FakeEngine] = []
    with running_server(tmp_path, engine=fake_engine_factory(engines)) as s:
        yield s, engines[0]


def test_v1_hands_the_engine_the_uploaded_bytes_and_renders_its_answer(fake: tuple[Server, FakeEngine]) -> None:
    server, engine = fake
    with server.client() as c:
        r = c.post("/v1/predict", files={"image": ("a.png", b"\x89PNG-bytes"), "text": (None, "hello")})
    assert r.status_code == 200, r.text
    (name, raws), = engine.calls
    assert name is None and raws == [RawInputs(image=b"\x89PNG-bytes", text=b"hello")]
    assert engine.budgets == [server.app.state.service.budget]  # decoding is held on the memory budget
    expected = expected_probabilities(raws[0])
    assert r.json()["probabilities"] == pytest.approx(dict(zip(LABELS, expected.tolist())))
    assert engine.withdrawn >= 1  # the announcement ended


def test_v2_makes_the_same_engine_call_with_every_sample(fake: tuple[Server, FakeEngine]) -> None:
    server, engine = fake
    body = {"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hello", ""]},
        {"name": "image", "datatype": "BYTES", "shape": [2], "data": ["", base64.b64encode(b"img").decode()]},
    ]}
    with server.client() as c:
        r = c.post("/v2/models/fake/infer", json=body)
    assert r.status_code == 200, r.text
    (name, raws), = engine.calls
    assert name == "fake" and raws == [RawInputs(text=b"hello"), RawInputs(image=b"img")]
    assert engine.budgets == [server.app.state.service.budget]
    probabilities = next(o for o in r.json()["outputs"] if o["name"] == "probabilities")
    assert probabilities["data"] == pytest.approx([*expected_probabilities(raws[0]), *expected_probabilities(raws[1])])


def test_an_engine_error_renders_per_api_family(fake: tuple[Server, FakeEngine]) -> None:
    server, engine = fake
    engine.fail_with = Overloaded("too busy", retry_after_s=2.5)
    with server.client() as c:
        v1 = c.post("/v1/predict", files={"text": (None, "x")})
        v2 = c.post("/v2/models/fake/infer", json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                                "data": ["x"]}]})
    assert v1.status_code == v2.status_code == 503
    assert v1.headers["retry-after"] == v2.headers["retry-after"] == "3"
    assert v1.json()["error"]["code"] == "overloaded" and v1.json()["error"]["message"] == "too busy"
    assert v2.json() == {"error": "too busy"}


def test_the_http_layer_runs_without_torch(tmp_path: Path) -> None:
    """The app, its routes and a fake engine, in a process where importing torch fails."""
    code = f"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises
from tests.fakes import fake_engine_factory
from tests.server import running_server
with running_server({str(tmp_path)!r}, engine=fake_engine_factory([])) as s, s.client() as c:
    assert c.get("/readyz").status_code == 200
    assert c.post("/v1/predict", files={{"text": (None, "hi")}}).status_code == 200
    assert c.get("/v1/models").json()["default"] == "fake"
    assert c.get("/openapi.json").status_code == 200
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
