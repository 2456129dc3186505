"""`train --init-from ARTIFACT`: fine-tuning starts from the artifact's weights, with its architecture, and says so."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.cli import main
from app.model.artifact import load_artifact
from tests.training.test_train import SMALL, write_toy_manifest
from tests.training.test_usage_errors import _one_line_error


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_manifest(tmp_path_factory.mktemp("toy"), n=150)


@pytest.fixture(scope="module")
def source(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained toy artifact (version 1) to start from."""
    out = tmp_path_factory.mktemp("models") / "toy"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "8", "--patience", "8",
                 "--no-augment", *SMALL]) == 0
    assert json.loads((out / "metrics.json").read_text())["accuracy"] > 0.9
    return out


def _first_epoch(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())["history"][0]


def test_fine_tuning_starts_from_the_artifact_weights(manifest: Path, source: Path, tmp_path: Path) -> None:
    one_step = ["--manifest", str(manifest), "--epochs", "1", "--max-steps", "1", "--no-augment", "--batch-size", "16"]
    # The architecture comes from the artifact: no width or size flag is given here.
    assert main(["train", *one_step, "--out", str(tmp_path / "ft"), "--init-from", str(source)]) == 0
    assert main(["train", *one_step, "--out", str(tmp_path / "fresh"), *SMALL]) == 0
    assert _first_epoch(tmp_path / "ft")["val_accuracy"] > 0.9  # one step from the trained weights
    assert _first_epoch(tmp_path / "fresh")["val_accuracy"] < 0.7  # one step from random weights: near chance


def test_parameters_are_the_artifact_parameters_before_the_first_step(
    manifest: Path, source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--init-from", str(source), "--epochs", "1",
                 "--max-steps", "1", "--lr", "1e-12", "--weight-decay", "0"]) == 0
    before, after = load_artifact(source).model, load_artifact(out).model
    for (name, p), (_, q) in zip(before.named_parameters(), after.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_the_run_records_where_its_weights_came_from(manifest: Path, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--init-from", str(source), "--epochs", "1",
                 "--max-steps", "2", "--name", "toy"]) == 0
    digest = hashlib.sha256((source / "weights.safetensors").read_bytes()).hexdigest()
    config = json.loads((out / "config.json").read_text())
    assert config["init_from"] == {"name": "toy", "version": "1", "weights_sha256": digest, "path": str(source)}
    assert config["version"] == "2"  # the source's version plus one
    src_config = json.loads((source / "config.json").read_text())
    for section, key in (("image", "width"), ("audio", "width"), ("text", "embed_dim"), ("fusion", "dim")):
        assert config[section][key] == src_config[section][key]
    assert json.loads((out / "metrics.json").read_text())["training"]["init_from"]["weights_sha256"] == digest
    card = (out / "card.md").read_text()
    assert f"initialised from: toy v1 (`--init-from {source}`; weights sha256 `{digest}`)" in card
    assert load_file(out / "weights.safetensors").keys() == load_file(source / "weights.safetensors").keys()


def test_a_fresh_run_records_no_source(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "1", "--max-steps", "1",
                 *SMALL]) == 0
    assert json.loads((out / "config.json").read_text())["init_from"] == {}
    assert "initialised from" not in (out / "card.md").read_text()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--image-width", "8"], ["--image-width 8 (it has 4)", "encoders.image.", "is (4,"]),
        (["--fusion-dim", "32", "--fusion-heads", "2"], ["--fusion-dim 32 (it has 16)", "does not fit its weights"]),
        (["--fusion", "concat"], ["--fusion concat (it has attention) does not fit its weights"]),
        (["--tokenizer", "words"], ["--tokenizer words (it has bytes) does not fit its weights"]),
        (["--modalities", "image,text"], ["--modalities image,text (it has image,text,audio)"]),
    ],
)
def test_an_incompatible_setting_is_one_line_naming_the_flag(
    manifest: Path, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
    expected: list[str],
) -> None:
    line = _one_line_error(capsys, ["train", "--manifest", str(manifest), "--out", str(tmp_path / "m"),
                                    "--init-from", str(source), *flags])
    assert line.startswith(f"fusion-serve: error: --init-from {source}: ")
    for text in expected:
        assert text in line
    assert not (tmp_path / "m").exists()


def test_what_is_not_an_artifact_is_a_usage_error(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line_error(capsys, ["train", "--manifest", str(manifest), "--out", str(tmp_path / "m"),
                                    "--init-from", str(tmp_path / "nowhere")])
    assert f"--init-from {tmp_path / 'nowhere'}" in line
