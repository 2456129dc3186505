"""Reading a training manifest: JSONL, one example per line, with errors that name the line.

Each line: {"image": path|null, "text": str|null, "audio": path|null, "label": str,
"split": "train"|"val"|"test"|"heldout"}. Paths are relative to the manifest's folder. A row needs a label and at
least one modality. `split` is optional only if no row has one: then rows are split 80/10/10 (stratified by label,
seeded). `heldout` rows are never trained or calibrated on; they are evaluated and reported on their own.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import UsageError

SPLITS = ("train", "val", "test", "heldout")


class ManifestError(UsageError):
    """The manifest is not usable; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    label: str
    split: str
    image: Path | None = None
    text: str | None = None
    audio: Path | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in ("image", "text", "audio") if getattr(self, m) is not None)


@dataclass(frozen=True)
class Manifest:
    path: Path
    rows: tuple[Row, ...]
    labels: tuple[str, ...]

    def split(self, name: str) -> list[Row]:
        return [r for r in self.rows if r.split == name]

    @property
    def modalities(self) -> tuple[str, ...]:
        present = {m for r in self.rows for m in r.modalities}
        return tuple(m for m in ("image", "text", "audio") if m in present)


def natural_key(label: str) -> tuple:
    """Sort "2" before "10"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label))


def read_manifest(path: Path, labels: tuple[str, ...] | None = None, seed: int = 0) -> Manifest:
    """Parse and check a manifest. `labels` fixes the label set; by default it is the training split's labels."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    base = path.parent
    raw_rows: list[tuple[int, dict]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path} line {n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise ManifestError(f"{path} line {n}: expected a JSON object, got {type(obj).__name__}")
            raw_rows.append((n, obj))
    if not raw_rows:
        raise ManifestError(f"{path}: the manifest is empty")
    with_split = sum("split" in obj for _, obj in raw_rows)
    if 0 < with_split < len(raw_rows):
        n = next(n for n, obj in raw_rows if "split" not in obj)
        raise ManifestError(f"{path} line {n}: no 'split', but other rows have one; give every row a split or none")
    splits = (
        [obj["split"] for _, obj in raw_rows] if with_split else _assign_splits([_label(path, n, o) for n, o in raw_rows], seed)
    )
    rows = [_row(path, base, n, obj, split) for (n, obj), split in zip(raw_rows, splits)]
    train_labels = sorted({r.label for r in rows if r.split == "train"}, key=natural_key)
    if labels is None:
        labels = tuple(train_labels)
    if len(labels) < 2:
        raise ManifestError(f"{path}: the training split needs at least two labels, it has {list(labels)}")
    known = set(labels)
    for r in rows:
        if r.label not in known:
            raise ManifestError(
                f"{path} line {r.line}: unknown label {r.label!r}; the labels are those of the training split: "
                f"{', '.join(labels)}"
            )
    for s in ("train", "val"):
        if not any(r.split == s for r in rows):
            raise ManifestError(f"{path}: no rows in the '{s}' split")
    return Manifest(path=path, rows=tuple(rows), labels=tuple(labels))


def _label(path: Path, n: int, obj: dict) -> str:
    label = obj.get("label")
    if not isinstance(label, (str, int)) or isinstance(label, bool) or str(label) == "":
        raise ManifestError(f"{path} line {n}: 'label' must be a non-empty string")
    return str(label)


def _row(path: Path, base: Path, n: int, obj: dict, split: object) -> Row:
    where = f"{path} line {n}"
    label = _label(path, n, obj)
    if split not in SPLITS:
        raise ManifestError(f"{where}: 'split' must be one of {', '.join(SPLITS)}, got {split!r}")
    files: dict[str, Path | None] = {}
    for key in ("image", "audio"):
        value = obj.get(key)
        if value is None:
            files[key] = None
            continue
        if not isinstance(value, str) or not value:
            raise ManifestError(f"{where}: '{key}' must be a file path or null")
        file = base / value
        if not file.is_file():
            raise ManifestError(f"{where}: {key} file {value!r} not found (paths are relative to {base})")
        files[key] = file
    text = obj.get("text")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ManifestError(f"{where}: 'text' must be a non-empty string or null")
    if files["image"] is None and files["audio"] is None and text is None:
        raise ManifestError(f"{where}: the row has no image, text or audio")
    return Row(line=n, label=label, split=str(split), image=files["image"], text=text, audio=files["audio"])


def _assign_splits(labels: list[str], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    for idx in by_label.values():
        idx = list(rng.permutation(idx))
        n_val = n_test = max(1, round(0.1 * len(idx))) if len(idx) >= 10 else 0
        for j, i in enumerate(idx):
            out[i] = "val" if j < n_val else "test" if j < n_val + n_test else "train"
    return out
