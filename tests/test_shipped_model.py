"""The shipped default model, served as shipped: README's example answer, and every input subset of it."""
from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.server import Server, running_server

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "bench" / "assets"


def readme_example() -> dict:
    """The JSON answer README shows for its curl example."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Calling the API", 1)[1]
    return json.loads(re.search(r"```json\n(.+?)\n```", section, flags=re.S).group(1))


def readme_files() -> dict[str, tuple]:
    """The parts README's curl example sends."""
    return {
        "image": ("digit.png", (ASSETS / "digit.png").read_bytes(), "image/png"),
        "text": (None, (ASSETS / "caption.txt").read_text(encoding="utf-8").strip()),
        "audio": ("digit.wav", (ASSETS / "digit.wav").read_bytes(), "audio/wav"),
    }


@pytest.fixture(scope="module")
def shipped() -> Iterator[Server]:
    with running_server(ROOT / "models", max_batch_size=4, runtime="auto") as s:
        yield s


def test_readme_example_answer(shipped: Server) -> None:
    expected = readme_example()
    with shipped.client() as c:
        r = c.post("/v1/predict", params={"top_k": 3}, files=readme_files())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == expected["model"] and body["version"] == expected["version"]
    assert body["modalities"] == expected["modalities"]
    assert [t["label"] for t in body["top"]][:1] == [expected["top"][0]["label"]]
    assert round(body["top"][0]["probability"], 2) == round(expected["top"][0]["probability"], 2)
    for label, p in expected["probabilities"].items():
        assert round(body["probabilities"][label], 2) == round(p, 2), label


@pytest.mark.parametrize(
    "subset", [s for r in (1, 2, 3) for s in itertools.combinations(("image", "text", "audio"), r)], ids="+".join
)
def test_every_input_subset_of_the_example_answers(shipped: Server, subset: tuple[str, ...]) -> None:
    files = {k: v for k, v in readme_files().items() if k in subset}
    with shipped.client() as c:
        r = c.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["modalities"] == list(subset)
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4


def test_the_shipped_model_describes_its_own_encoders(shipped: Server) -> None:
    with shipped.client() as c:
        (info,) = c.get("/v1/models").json()["models"]
    config = json.loads((ROOT / "models" / "digits" / "config.json").read_text())
    assert info["name"] == "digits"
    assert info["encoders"]["audio"] == f"log-mel + {config['audio']['encoder']}"
    assert info["encoders"]["image"] == config["image"]["encoder"]


def test_readme_explain_example(shipped: Server) -> None:
    """README's explained example is what the shipped model answers, and its attributions add up."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Explaining a prediction", 1)[1]
    curl = re.search(r"```bash\n(.+?)\n```", section, flags=re.S).group(1)
    expected = json.loads(re.search(r"```json\n(.+?)\n```", section, flags=re.S).group(1))
    files = readme_files() | {"text": (None, re.search(r'-F text="([^"]+)"', curl).group(1))}
    params = dict(re.findall(r"[?&](\w+)=(\w+)", curl))
    assert params == {"top_k": "2", "explain": "true"}
    with shipped.client() as c:
        r = c.post("/v1/predict", params=params, files=files)
    assert r.status_code == 200, r.text
    body, e = r.json(), r.json()["explanation"]
    assert [t["label"] for t in body["top"]] == [t["label"] for t in expected["top"]]
    assert body["modalities"] == expected["modalities"]

    def rounded(x: object) -> object:
        if isinstance(x, float):
            return round(x, 2)
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, list):
            return [rounded(v) for v in x]
        return x

    assert rounded(e) == rounded(expected["explanation"])
    for label, shares in e["attributions"].items():
        assert sum(shares.values()) == pytest.approx(body["probabilities"][label] - e["baseline"], abs=1e-5)


def test_the_shipped_model_reports_its_runtime(shipped: Server) -> None:
    """FUSION_RUNTIME's default: ONNX Runtime where it answers as the model as trained and is the faster at load;
    which one won depends on the machine, what it must report does not."""
    with shipped.client() as c:
        runtime = c.get("/v1/models/digits").json()["runtime"]
    assert runtime["requested"] == "auto" and runtime["name"] in ("torch", "onnxruntime")
    assert set(runtime["speedup"]) == {"1", "4"}  # both were timed: batch 1 and the largest batch
    if runtime["name"] == "onnxruntime":
        assert runtime["onnx_parts"] == ["all", "audio", "fusion", "image", "text"]
        assert 0 <= runtime["parity"] <= 1e-4


DEJAVU_BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")  # Debian's fonts-dejavu-core


@pytest.mark.skipif(not DEJAVU_BOLD.is_file(), reason="needs fonts-dejavu-core")
def test_a_dark_digit_on_white_is_read(shipped: Server) -> None:
    """Black ink on a white 200x200 picture, as a drawing app saves it (v1, trained on light-on-dark 28x28
    images stretched whole, read none of these)."""
    font = ImageFont.truetype(str(DEJAVU_BOLD), 150)
    wrong = {}
    with shipped.client() as c:
        for digit in "0123456789":
            picture = Image.new("RGB", (200, 200), "white")
            ImageDraw.Draw(picture).text((100, 100), digit, fill="black", font=font, anchor="mm")
            png = io.BytesIO()
            picture.save(png, "PNG")
            r = c.post("/v1/predict", files={"image": ("digit.png", png.getvalue(), "image/png")})
            assert r.status_code == 200, r.text
            if (top := r.json()["top"][0])["label"] != digit:
                wrong[digit] = top
    assert not wrong
