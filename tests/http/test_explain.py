"""`?explain=true` on /v1 and the `explain` parameter on /v2, over real HTTP: the attributions add up, each subset's
value is what sending only that subset answers, explained requests count as their rows in a batch, and the
conflict and modality-mix counters move."""
from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from app.http.v1.schemas import PredictResponse
from tests.fakes import FakeEngine, fake_engine_factory
from tests.helpers import LABELS, Gate, png_bytes, wav_bytes
from tests.server import Server, running_server

ALL = {"image": ("a.png", png_bytes(), "image/png"), "text": (None, "a small dog barking"),
       "audio": ("a.wav", wav_bytes(), "audio/wav")}
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("image", "text", "audio"), r)]


def post(server: Server, files: dict, **params: object) -> dict:
    with server.client() as c:
        r = c.post("/v1/predict", files=files, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_attributions_sum_to_each_top_label_probability_above_one_in_k(server: Server) -> None:
    for subset in SUBSETS:
        body = post(server, {m: ALL[m] for m in subset}, explain="true", top_k=3)
        PredictResponse.model_validate(body)  # the documented schema
        e = body["explanation"]
        assert e["baseline"] == pytest.approx(1 / len(LABELS))
        assert list(e["attributions"]) == [t["label"] for t in body["top"]]
        for label, shares in e["attributions"].items():
            assert list(shares) == list(subset)
            assert sum(shares.values()) == pytest.approx(body["probabilities"][label] - 1 / len(LABELS), abs=1e-5)


def test_each_subset_value_is_what_sending_only_that_subset_answers(server: Server) -> None:
    body = post(server, ALL, explain="true", top_k=3)
    e = body["explanation"]
    assert list(e["subsets"]) == ["+".join(s) for s in SUBSETS]
    for subset in SUBSETS:
        alone = post(server, {m: ALL[m] for m in subset})
        for label, p in e["subsets"]["+".join(subset)].items():
            assert p == pytest.approx(alone["probabilities"][label], abs=1e-5)
        if len(subset) == 1:  # each modality's own answer
            (m,) = subset
            assert e["modalities"][m] == {"label": alone["top"][0]["label"],
                                          "probability": pytest.approx(alone["top"][0]["probability"], abs=1e-5)}
    plain = post(server, ALL, top_k=3)
    assert "explanation" not in plain
    assert plain["probabilities"] == pytest.approx(body["probabilities"], abs=1e-5)
    assert e["agreement"] == (len({a["label"] for a in e["modalities"].values()}) == 1)
    assert e["fusion"]["type"] == "attention" and len(e["fusion"]["attention"]) == 1
    assert set(e["fusion"]["attention"][0]) == {"image", "text", "audio"}


def test_explained_requests_weigh_their_rows_in_a_batch(server: Server) -> None:
    """max_batch_size 8: two plain requests share a batch, but two explained three-input requests (7 rows each)
    cannot, and an explained one-input request (1 row) can join one of them."""
    model = server.served()
    with Gate(model) as gate, ThreadPoolExecutor(8) as pool:
        def send(files: dict, explain: bool) -> object:
            return pool.submit(post, server, files, **({"explain": "true"} if explain else {}))

        first = send({"text": ALL["text"]}, False)
        assert gate.entered.wait(10)
        queued = []
        for files in (ALL, ALL, {"audio": ALL["audio"]}):  # one at a time, so that they queue in this order
            queued.append(send(files, True))
            while model.batcher.queue_depth < len(queued):
                time.sleep(0.01)
        gate.release.set()
        bodies = [f.result() for f in (first, *queued)]
    assert gate.batch_sizes == [1, 1, 2]
    assert [b["timing"]["batch_size"] for b in bodies] == [1, 1, 2, 2]
    assert all("explanation" in b for b in bodies[1:])


def scrape(server: Server) -> dict[tuple[str, frozenset], float]:
    with server.client() as c:
        text = c.get("/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture()
def fake(tmp_path: Path) -> Iterator[tuple[Server, FakeEngine]]:
    engines: list[FakeEngine] = []
    with running_server(tmp_path, engine=fake_engine_factory(engines)) as s:
        yield s, engines[0]


# The fake engine gives 0.9 to label (input bytes % 3): image alone (1 byte) says green, text alone (2 bytes) blue,
# both together (3 bytes) red: each input alone confidently contradicts the answer.
CONFLICTING = {"image": ("a.png", b"x"), "text": (None, "yy")}


def test_a_confident_input_that_contradicts_the_answer_is_a_conflict(fake: tuple[Server, FakeEngine]) -> None:
    server, engine = fake
    before = scrape(server)
    body = post(server, CONFLICTING, explain="true", top_k=1)
    mixed = post(server, {"text": (None, "yy"), "audio": ("a.wav", b"zzz")}, explain="true", top_k=1)
    post(server, {"audio": ("a.wav", b"zzz")})
    after = scrape(server)
    assert engine.explained == [True, True, False]
    e = body["explanation"]
    assert body["top"][0]["label"] == "red"
    assert e["modalities"] == {"image": {"label": "green", "probability": pytest.approx(0.9)},
                               "text": {"label": "blue", "probability": pytest.approx(0.9)}}
    assert e["conflict"] is True and e["conflicting"] == ["image", "text"] and e["agreement"] is False
    # text alone says blue, audio alone (3 bytes) red, together (5 bytes) blue: no agreement, and audio's red is a
    # conflict with the answer.
    assert mixed["explanation"]["conflicting"] == ["audio"] and not mixed["explanation"]["agreement"]

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("fusion_predictions_total", model="fake", modalities="image+text") == 1
    assert delta("fusion_predictions_total", model="fake", modalities="text+audio") == 1
    assert delta("fusion_predictions_total", model="fake", modalities="audio") == 1
    assert delta("fusion_explained_predictions_total", model="fake") == 2
    assert delta("fusion_modality_conflicts_total", model="fake", modality="image") == 1
    assert delta("fusion_modality_conflicts_total", model="fake", modality="text") == 1
    assert delta("fusion_modality_conflicts_total", model="fake", modality="audio") == 1
    assert ("fusion_predictions_total", frozenset({"model": "fake", "modalities": "image"}.items())) in after


# --- /v2 ------------------------------------------------------------------------------------------------------------

def v2_body(explain: bool | None, outputs: list[str] | None = None, binary: bool = False) -> dict:
    body: dict = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a small dog", "hello"]},
                             {"name": "audio", "datatype": "BYTES", "shape": [2],
                              "data": ["", base64.b64encode(wav_bytes()).decode()]}]}
    if explain is not None:
        body["parameters"] = {"explain": explain, "binary_data_output": binary}
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def test_v2_explain_outputs_match_v1(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v2/models/tiny/infer", json=v2_body(True))
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert list(out) == ["probabilities", "labels", "modalities", "attributions", "modality_probabilities",
                         "agreement", "conflict", "fusion_attention"]
    assert out["modalities"]["data"] == ["image", "text", "audio"]
    k = len(LABELS)
    probs = np.array(out["probabilities"]["data"]).reshape(2, k)
    shares = np.array(out["attributions"]["data"]).reshape(2, 3, k)
    alone = np.array(out["modality_probabilities"]["data"]).reshape(2, 3, k)
    assert out["fusion_attention"]["shape"] == [2, 1, 3]
    assert out["agreement"]["datatype"] == "BOOL" and out["agreement"]["data"][0] is True  # one input: agrees
    np.testing.assert_allclose(shares.sum(axis=1), probs - 1 / k, atol=1e-5)
    assert not shares[0, [0, 2]].any() and not alone[0, [0, 2]].any() and not shares[1, 0].any()  # not sent
    v1 = post(server, {"text": (None, "hello"), "audio": ("a.wav", wav_bytes(), "audio/wav")}, explain="true",
              top_k=k)["explanation"]
    for j, m in ((1, "text"), (2, "audio")):
        for i, label in enumerate(LABELS):
            assert alone[1, j, i] == pytest.approx(v1["subsets"][m][label], abs=1e-5)
            assert shares[1, j, i] == pytest.approx(v1["attributions"][label][m], abs=1e-5)
    assert out["conflict"]["data"][1] == v1["conflict"] and out["agreement"]["data"][1] == v1["agreement"]


def test_v2_explain_outputs_need_the_parameter(server: Server) -> None:
    with server.client() as c:
        plain = c.post("/v2/models/tiny/infer", json=v2_body(None))
        refused = c.post("/v2/models/tiny/infer", json=v2_body(False, ["attributions"]))
        chosen = c.post("/v2/models/tiny/infer", json=v2_body(True, ["conflict", "probabilities"]))
        unknown = c.post("/v2/models/tiny/infer", json=v2_body(True, ["fusion_gates"]))  # an attention model
        not_bool = c.post("/v2/models/tiny/infer", json={**v2_body(None), "parameters": {"explain": "yes"}})
    assert [o["name"] for o in plain.json()["outputs"]] == ["probabilities", "labels"]
    assert refused.status_code == 422 and "explain" in refused.json()["error"]
    assert [o["name"] for o in chosen.json()["outputs"]] == ["conflict", "probabilities"]
    assert unknown.status_code == 422 and "fusion_attention" in unknown.json()["error"]
    assert not_bool.status_code == 400 and "explain" in not_bool.json()["error"]


def test_tritonclient_reads_the_explain_outputs_as_binary(server: Server) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"a small dog", b"hello"], dtype=np.object_))
    names = ["probabilities", "attributions", "agreement", "conflict", "modalities"]
    result = client.infer("tiny", [text], outputs=[triton.InferRequestedOutput(n, binary_data=True) for n in names],
                          parameters={"explain": True})
    probs, shares = result.as_numpy("probabilities"), result.as_numpy("attributions")
    assert shares.shape == (2, 3, len(LABELS))
    np.testing.assert_allclose(shares.sum(axis=1), probs - 1 / len(LABELS), atol=1e-5)
    assert result.as_numpy("agreement").tolist() == [True, True]  # one input each
    assert result.as_numpy("conflict").dtype == np.bool_
    assert result.as_numpy("modalities").tolist() == [b"image", b"text", b"audio"]
