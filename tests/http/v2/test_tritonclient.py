"""The Open Inference Protocol (v2) through Triton's own, unmodified Python client: the answers equal /v1's."""
from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.helpers import LABELS, png_bytes, wav_bytes
from tests.server import Server, running_server

IMAGES = [png_bytes((16 + 3 * i, 20 + i), mode="L" if i % 2 else "RGB") for i in range(8)]
TEXTS = [f"sample {i}: a small dog barking {'!' * i}".encode() for i in range(8)]
AUDIOS = [wav_bytes(seconds=0.3 + 0.05 * i, rate=(8000, 16000, 11025)[i % 3], channels=1 + i % 2) for i in range(8)]


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def bytes_input(name: str, values: list[bytes], binary: bool) -> triton.InferInput:
    """A BYTES input; in JSON (binary=False) image and audio files travel base64-encoded, text as itself."""
    if not binary and name != "text":
        values = [base64.b64encode(v) for v in values]
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_), binary_data=binary)
    return tensor


def infer(server: Server, binary: bool = True, model: str = "tiny", **columns: list[bytes]) -> np.ndarray:
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    inputs = [bytes_input(name, values, binary) for name, values in columns.items()]
    return client(server).infer(model, inputs, outputs=outputs).as_numpy("probabilities")


def multipart(server: Server, model: str = "tiny", **parts: bytes) -> np.ndarray:
    """The /v1 answer for one sample, in label order."""
    files = {name: (None, data) if name == "text" else (f"{name}.bin", data) for name, data in parts.items() if data}
    with server.client() as c:
        r = c.post(f"/v1/models/{model}/predict", files=files)
    assert r.status_code == 200, r.text
    return np.array([r.json()["probabilities"][label] for label in LABELS], dtype=np.float32)


def test_health_and_server_metadata(server: Server) -> None:
    c = client(server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("tiny") and c.is_model_ready("tiny", "0.0.1")
    assert not c.is_model_ready("tiny", "2") and not c.is_model_ready("nope")
    meta = c.get_server_metadata()
    assert meta["name"] == "fusion-serve"
    assert {"binary_tensor_data", "classification"} <= set(meta["extensions"])


def test_model_metadata(server: Server) -> None:
    c = client(server)
    meta = c.get_model_metadata("tiny")
    assert meta == c.get_model_metadata("tiny", "0.0.1")
    assert meta["name"] == "tiny" and meta["versions"] == ["0.0.1"]
    assert meta["inputs"] == [{"name": m, "datatype": "BYTES", "shape": [-1]} for m in ("image", "text", "audio")]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]},
        {"name": "labels", "datatype": "BYTES", "shape": [len(LABELS)]},
    ]
    config = c.get_model_config("tiny")
    assert config["max_batch_size"] == 0
    assert [(i["name"], i["data_type"]) for i in config["input"]] == [
        ("image", "TYPE_STRING"), ("text", "TYPE_STRING"), ("audio", "TYPE_STRING")
    ]
    with pytest.raises(InferenceServerException) as err:
        c.get_model_metadata("nope")
    assert err.value.status() == "404" and "nope" in err.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_one_sample_equals_multipart(server: Server, binary: bool) -> None:
    got = infer(server, binary, image=IMAGES[:1], text=TEXTS[:1], audio=AUDIOS[:1])
    assert got.dtype == np.float32 and got.shape == (1, len(LABELS))
    want = multipart(server, image=IMAGES[0], text=TEXTS[0], audio=AUDIOS[0])
    np.testing.assert_allclose(got[0], want, atol=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_batch_of_eight_equals_multipart_row_by_row(server: Server, binary: bool) -> None:
    got = infer(server, binary, image=IMAGES, text=TEXTS, audio=AUDIOS)
    assert got.shape == (8, len(LABELS))
    for i in range(8):
        want = multipart(server, image=IMAGES[i], text=TEXTS[i], audio=AUDIOS[i])
        np.testing.assert_allclose(got[i], want, atol=1e-5, err_msg=f"sample {i}")
    assert len({tuple(row) for row in got.round(6)}) == 8  # the samples really differ


def test_missing_modalities_per_sample(server: Server) -> None:
    """An empty element means that sample lacks the modality; a left-out input, that every sample does."""
    image = [IMAGES[0], b"", IMAGES[2], b""]
    text = [TEXTS[0], TEXTS[1], b"", TEXTS[3]]
    audio = [AUDIOS[0], AUDIOS[1], b"", b""]
    got = infer(server, image=image, text=text, audio=audio)
    for i in range(4):
        want = multipart(server, image=image[i], text=text[i], audio=audio[i])
        np.testing.assert_allclose(got[i], want, atol=1e-5, err_msg=f"sample {i}")
    no_audio = infer(server, binary=False, image=[IMAGES[5], b""], text=[TEXTS[5], TEXTS[6]])
    np.testing.assert_allclose(no_audio[0], multipart(server, image=IMAGES[5], text=TEXTS[5]), atol=1e-5)
    np.testing.assert_allclose(no_audio[1], multipart(server, text=TEXTS[6]), atol=1e-5)


def test_default_outputs_labels_and_request_id(server: Server) -> None:
    inputs = [bytes_input("text", TEXTS[:2], binary=True)]
    result = client(server).infer("tiny", inputs, request_id="req-7")  # no outputs named: all, as binary
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_version"] == "0.0.1"
    assert [x.decode() for x in result.as_numpy("labels")] == list(LABELS)
    assert result.as_numpy("probabilities").shape == (2, len(LABELS))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension(server: Server, binary: bool) -> None:
    inputs = [bytes_input("text", TEXTS[:3], binary)]
    c = client(server)
    probs = c.infer("tiny", inputs, outputs=[triton.InferRequestedOutput("probabilities")]).as_numpy("probabilities")
    top = c.infer(
        "tiny", inputs, outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)]
    ).as_numpy("probabilities")
    assert top.shape == (3, 2)
    for row, classes in zip(probs, top):
        parsed = [(v if isinstance(v, str) else v.decode()).split(":") for v in classes]
        order = np.argsort(-row, kind="stable")[:2]
        assert [int(index) for _, index, _ in parsed] == list(order)
        assert [label for _, _, label in parsed] == [LABELS[i] for i in order]
        assert [np.float32(value) for value, _, _ in parsed] == [row[i] for i in order]


def test_errors_reach_the_client_with_status_and_message(server: Server) -> None:
    c = client(server)
    with pytest.raises(InferenceServerException) as err:
        c.infer("tiny", [bytes_input("image", [b"not an image"], binary=True)])
    assert err.value.status() == "415" and "not a supported image" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        c.infer("tiny", [bytes_input("text", [b"hi", b""], binary=True)])
    assert err.value.status() == "422" and "sample 1" in err.value.message()


@pytest.fixture(scope="module")
def zoo(zoo_dir: Path) -> Iterator[Server]:
    with running_server(zoo_dir, default_model="fusion-attention") as s:
        yield s


def test_a_model_lists_only_its_own_inputs(zoo: Server) -> None:
    c = client(zoo)
    assert [i["name"] for i in c.get_model_metadata("no-audio")["inputs"]] == ["image", "text"]
    got = infer(zoo, model="no-audio", image=IMAGES[:2], text=TEXTS[:2])
    np.testing.assert_allclose(got[1], multipart(zoo, "no-audio", image=IMAGES[1], text=TEXTS[1]), atol=1e-5)
    with pytest.raises(InferenceServerException) as err:
        infer(zoo, model="no-audio", text=TEXTS[:1], audio=AUDIOS[:1])
    assert err.value.status() == "422" and "audio" in err.value.message()


def test_v1_keeps_its_own_error_body(server: Server) -> None:
    with httpx.Client(base_url=server.url) as c:
        v1 = c.post("/v1/models/nope/predict", files={"text": (None, "hi")})
        v2 = c.post("/v2/models/nope/infer", json={"inputs": []})
    assert v1.status_code == v2.status_code == 404
    assert v1.json()["error"]["code"] == "model_not_found"
    assert isinstance(v2.json()["error"], str)
