"""`fusion-serve train` writes an artifact the service loads and serves over HTTP unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file

from app.cli import main
from app.model.artifact import load_artifact
from tests.server import running_server

LABELS = ("apple", "banana", "pear")
SMALL = ["--image-width", "4", "--text-dim", "16", "--text-layers", "1", "--text-heads", "2", "--n-mels", "16",
         "--audio-width", "4", "--fusion-dim", "16", "--fusion-hidden", "32", "--fusion-heads", "2",
         "--clip-seconds", "0.5", "--batch-size", "16"]


def _shape(label: int, rng: np.random.Generator) -> np.ndarray:
    """A ring, a horizontal bar or a vertical bar, light on a noisy dark background: what the label looks like
    survives every augmentation (polarity, colour, scale, position, rotation, blur)."""
    arr = (rng.random((28, 28)) * 60).astype(np.uint8)
    ys, xs = np.mgrid[0:28, 0:28]
    cy, cx = 14 + rng.integers(-3, 4), 14 + rng.integers(-3, 4)
    if label == 0:
        arr[np.abs(np.hypot(ys - cy, xs - cx) - 8) < 2] = 255
    elif label == 1:
        arr[cy - 2 : cy + 2, 4:24] = 255
    else:
        arr[4:24, cx - 2 : cx + 2] = 255
    return arr


def write_toy_manifest(root: Path, n: int = 150, missing_audio: bool = True) -> Path:
    """A learnable toy task: the label shows as a shape (image), a word (text) and a pitch (audio)."""
    rng = np.random.default_rng(0)
    rows = []
    train_end, val_end = int(n * 0.6), int(n * 0.8)
    for i in range(n):
        y = i % 3
        Image.fromarray(_shape(y, rng), "L").save(root / f"{i}.png")
        t = np.arange(8000) / 16000
        sf.write(root / f"{i}.wav", 0.3 * np.sin(2 * np.pi * (300, 700, 1600)[y] * t), 16000)
        row = {"image": f"{i}.png", "text": f"a {LABELS[y]}", "audio": f"{i}.wav", "label": LABELS[y],
               "split": "train" if i < train_end else "val" if i < val_end else "test"}
        if missing_audio and i % 4 == 0:
            row["audio"] = None  # rows may lack modalities
        rows.append(json.dumps(row))
    (root / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_manifest(tmp_path_factory.mktemp("data"), n=90)


def test_train_then_serve(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "toy"
    checkpoint = tmp_path / "checkpoint" / "toy"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "2", "--max-steps", "6",
                 "--checkpoint", str(checkpoint), *SMALL]) == 0
    assert load_artifact(checkpoint).spec.labels == LABELS  # the best model so far, servable as it is
    names = {p.name for p in out.iterdir()}
    # Readable by the container's user (or anyone else) who serves it; no temporary file left behind.
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {"0o644"}
    assert {"config.json", "weights.safetensors", "card.md", "metrics.json", "training_curves.png",
            "confusion_matrix.png", "reliability.png"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["subsets"]) == {"image", "text", "audio", "image+text", "image+audio", "text+audio",
                                       "image+text+audio"}
    assert 0 <= metrics["ece_after_calibration"] <= 1 and metrics["temperature"] > 0
    assert len(metrics["confusion_matrix"]) == 3
    card = (out / "card.md").read_text()
    assert "Per modality subset" in card and "ECE, all modalities: before -> after calibration" in card
    config = json.loads((out / "config.json").read_text())
    assert config["augmentation"]["image_invert"] == 0.5 and config["augmentation"]["audio_snr_min"] == 0.0
    assert (config["image"]["fit"], config["image"]["polarity"]) == ("ink", "light_on_dark")
    assert (config["text"]["normalize"], config["audio"]["window"]) == ("digits", "speech")
    assert "augmentation (training only" in card and "image_invert=0.5" in card
    assert set(metrics["subset_temperatures"]) == set(metrics["subsets"])

    with running_server(out.parent) as s, s.client() as c:
        info = c.get("/v1/models/toy").json()
        assert info["labels"] == list(LABELS)
        assert info["metrics"]["accuracy"] == metrics["accuracy"]
        r = c.post("/v1/predict", files={"text": (None, "a pear"), "image": ("x.png", (manifest.parent / "2.png").read_bytes())})
        assert r.status_code == 200, r.text
        assert set(r.json()["probabilities"]) == set(LABELS)


def test_other_encoders_and_fusions_train(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "m2"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "1", "--max-steps", "2",
                 "--fusion", "gated", "--text-encoder", "gru", "--tokenizer", "words", "--modalities", "image,text",
                 "--no-augment", "--image-fit", "stretch", "--accumulate-steps", "2", *SMALL]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["augmentation"] == {} and cfg["image"]["fit"] == "stretch"
    assert "augmentation: none" in (out / "card.md").read_text()
    assert cfg["fusion"]["type"] == "gated" and cfg["text"]["encoder"] == "gru"
    assert "pear" in cfg["text"]["tokenizer"]["vocab"] and cfg["audio"] is None


def test_training_is_deterministic(manifest: Path, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        main(["train", "--manifest", str(manifest), "--out", str(tmp_path / name), "--epochs", "1", "--max-steps", "3",
              *SMALL])
        outs.append(load_file(tmp_path / name / "weights.safetensors"))
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_manifest_error_is_reported_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"text": "a", "label": "x", "split": "train"}\n{oops\n')
    assert main(["train", "--manifest", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "line 2" in capsys.readouterr().err


def test_compare_adds_fusion_and_single_modality_tables(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "1", "--max-steps", "2", *SMALL])
    weights = (out / "weights.safetensors").read_bytes()
    assert main(["compare", "--manifest", str(manifest), "--artifact", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["fusion_comparison"]) == ["concat", "weighted_sum", "product", "gated", "attention", "late"]
    assert set(metrics["fusion_comparison"]["late"]["accuracy_without"]) == {"image", "text", "audio"}
    assert set(metrics["single_modality_models"]) == {"image", "text", "audio"}
    card = (out / "card.md").read_text()
    assert "Fusion types compared" in card and "Dedicated single-modality models" in card
    assert (out / "weights.safetensors").read_bytes() == weights


def test_precision_report_compares_reduced_precision_with_float32(manifest: Path, tmp_path: Path) -> None:
    from bench.precision import measure, to_markdown

    out = tmp_path / "models" / "toy"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "1", "--max-steps", "4",
                 *SMALL]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    report = measure(out.parent, "toy", manifest, "cpu", threads=1)
    assert report["examples"] == 18  # the test split
    everything = report["subsets"]["image+text+audio"]
    if metrics["split"] == "test":  # the float32 row is the accuracy training reported
        assert everything["float32"]["accuracy"] == pytest.approx(metrics["accuracy"])
    for dtype in ("bfloat16", "float16"):
        row = everything[dtype]
        assert 0 <= row["changed_predictions"] <= everything["examples"]
        assert 0 < row["max_abs_prob_delta"] < 0.5  # rounded, not broken
    assert "| image+text+audio |" in to_markdown(report, "now")
