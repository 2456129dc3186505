"""Manifest errors name the file and line, and say what is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.training.manifest import ManifestError, read_manifest


def write(tmp_path: Path, rows: list[object]) -> Path:
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def ok(label: str = "cat", split: str = "train", **kw: object) -> dict:
    return {"text": f"a {label}", "label": label, "split": split, **kw}


BASE = [ok("cat"), ok("dog"), ok("cat", "val"), ok("dog", "test")]


def test_valid_manifest(tmp_path: Path) -> None:
    m = read_manifest(write(tmp_path, [*BASE, ok("dog", image="a.png")]))
    assert m.labels == ("cat", "dog") and len(m.split("train")) == 3
    assert m.modalities == ("image", "text")
    assert m.split("train")[2].image == tmp_path / "a.png"


@pytest.mark.parametrize(
    "row,message",
    [
        ('{"text": "x", "label": ', "line 5: not valid JSON"),
        ("[1, 2]", "line 5: expected a JSON object"),
        (ok("cow", "val"), "line 5: unknown label 'cow'"),
        (ok(image="missing.png"), "line 5: image file 'missing.png' not found"),
        (ok(audio=3), "line 5: 'audio' must be a file path"),
        ({"label": "cat", "split": "train"}, "line 5: the row has no image, text or audio"),
        (ok(split="holdout"), "line 5: 'split' must be one of train, val, test"),
        ({"text": "x", "split": "train"}, "line 5: 'label' must be a non-empty string"),
        ({"text": "x", "label": "cat"}, "line 5: no 'split'"),
    ],
    ids=["bad-json", "not-object", "unknown-label", "missing-file", "bad-path", "no-modality", "bad-split",
         "no-label", "mixed-split"],
)
def test_errors_name_the_line(tmp_path: Path, row: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        read_manifest(write(tmp_path, [*BASE, row]))


def test_splits_are_assigned_when_absent(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": ["a", "b"][i % 2]} for i in range(40)]
    m = read_manifest(write(tmp_path, rows), seed=1)
    assert {r.split for r in m.rows} == {"train", "val", "test"}
    again = read_manifest(write(tmp_path, rows), seed=1)
    assert [r.split for r in m.rows] == [r.split for r in again.rows]
