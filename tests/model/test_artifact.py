"""Artifact loading: a broken artifact stops startup with a message naming the file at fault."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from app.model.artifact import load_artifact, write_file
from app.model.errors import ArtifactError
from tests.helpers import write_tiny_artifact


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    return write_tiny_artifact(tmp_path / "m")


def test_roundtrip(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    assert loaded.spec.name == "m" and loaded.metrics["accuracy"] == 0.5
    assert not loaded.model.training


@pytest.mark.parametrize("missing", ["config.json", "weights.safetensors", "card.md"])
def test_missing_file_is_named(artifact: Path, missing: str) -> None:
    (artifact / missing).unlink()
    with pytest.raises(ArtifactError, match=missing):
        load_artifact(artifact)


def test_bad_json_is_named(artifact: Path) -> None:
    (artifact / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"config.json: not valid JSON"):
        load_artifact(artifact)


def test_invalid_config_names_the_field(artifact: Path) -> None:
    cfg = json.loads((artifact / "config.json").read_text())
    cfg["fusion"]["type"] = "magic"
    (artifact / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match=r"config.json: invalid model config: fusion.type"):
        load_artifact(artifact)


def test_weights_with_wrong_shapes_are_named(artifact: Path) -> None:
    cfg = json.loads((artifact / "config.json").read_text())
    cfg["labels"] = ["a", "b", "c", "d"]
    (artifact / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match=r"weights.safetensors: weights do not match config.json: wrong shapes"):
        load_artifact(artifact)


def test_missing_tensor_is_named(artifact: Path) -> None:
    path = artifact / "weights.safetensors"
    state = load_file(path)
    state.pop(sorted(state)[0])
    save_file(state, path)
    with pytest.raises(ArtifactError, match="missing tensors"):
        load_artifact(artifact)


def test_pickle_is_not_a_weights_file(artifact: Path) -> None:
    (artifact / "weights.safetensors").write_bytes(b"\x80\x04\x95pickle")
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_artifact(artifact)


def test_folder_name_must_be_url_safe(tmp_path: Path) -> None:
    src = write_tiny_artifact(tmp_path / "ok")
    bad = tmp_path / "has space"
    shutil.copytree(src, bad)
    with pytest.raises(ArtifactError, match="folder name"):
        load_artifact(bad)


def test_artifact_files_are_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        folder = write_tiny_artifact(tmp_path / "private")
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    assert modes == {name: "0o644" for name in ("config.json", "weights.safetensors", "card.md", "metrics.json")}
    load_artifact(folder)


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "card.md"
    write_file(path, "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_file(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["card.md"]



def test_weights_this_user_may_not_read_are_named_as_such(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the container's user meets with a model written on the host with 0600 weights (tests run as root, who
    reads anything: the refusal is the operating system's, as the container test shows for real)."""

    def refused(path: object, device: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("app.model.artifact.load_file", refused)
    with pytest.raises(ArtifactError, match=r"weights.safetensors: this user \(uid \d+\) may not read it"):
        load_artifact(artifact)
