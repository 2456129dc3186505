"""Bad training flags, settings and manifests end in one line naming what the user typed, exit status 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from tests.training.test_train import write_toy_manifest


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_manifest(tmp_path_factory.mktemp("usage"), n=30)


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--text-dim", "30", "--text-heads", "4"], "--text-dim 30 must be a multiple of --text-heads 4"),
        (["--fusion-dim", "30", "--fusion-heads", "4"], "--fusion-dim 30 must be a multiple of --fusion-heads 4"),
        (["--image-size", "4"], "--image-size 4: Input should be greater than or equal to 8"),
        (["--n-fft", "40000"], "--n-fft 40000 is longer than the clip"),
        (["--accumulate-steps", "0"], "--accumulate-steps 0 must be at least 1"),
        (["--aug-image-invert", "1.5"], "--aug-image-invert 1.5: must be within [0, 1]"),
        (["--aug-audio-snr-min", "30"], "--aug-audio-snr-min 30.0: must be <= snr_max"),
        (["--modalities", "image,smell"], "--modalities: unknown modality 'smell'"),
        (["--image-weights", "/nonexistent.pth", "--image-encoder", "resnet18"], "--image-weights /nonexistent.pth"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_training_flag_names_the_flag(
    toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    line = _one_line_error(capsys, ["train", "--manifest", str(toy), "--out", str(tmp_path / "m"), *flags])
    assert message in line
    assert not (tmp_path / "m").exists()


def test_bad_manifest_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "m.jsonl"
    bad.write_text(json.dumps({"text": "a", "label": "x", "split": "train"}) + "\n{oops\n")
    line = _one_line_error(capsys, ["train", "--manifest", str(bad), "--out", str(tmp_path / "o")])
    assert "line 2" in line and "not valid JSON" in line


def test_bad_make_data_setting_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, ["make-data", "--out", str(tmp_path), "--size", "10", "--no-audio",
                                    "--image-corrupt-prob", "2"])
    assert "--image-corrupt-prob 2.0: must be within [0, 1]" in line
