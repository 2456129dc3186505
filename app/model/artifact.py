"""Model artifacts on disk: `config.json` + `weights.safetensors` + `card.md` (+ optional `metrics.json`).

Loading validates everything and raises ArtifactError naming the file at fault; nothing is unpickled.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from app.errors import ArtifactError
from app.model.classifier import FusionClassifier
from app.model.spec import ArtifactSpec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.md"
METRICS_FILE = "metrics.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Artifact:
    """A loaded, validated artifact; the model is on the CPU in eval mode."""

    path: Path
    spec: ArtifactSpec
    model: FusionClassifier
    metrics: dict[str, Any] = field(default_factory=dict)


def is_artifact_dir(path: Path) -> bool:
    """Whether `path` looks like an artifact folder (it has a config.json)."""
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def load_spec(folder: Path) -> ArtifactSpec:
    """Read and validate `config.json`."""
    path = folder / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; every model folder needs a {CONFIG_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    try:
        return ArtifactSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ArtifactError(f"{path}: invalid model config: {problems}") from None


def load_artifact(folder: Path) -> Artifact:
    """Load and cross-check a whole artifact folder; raises ArtifactError with the file at fault."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: model folder not found")
    if not MODEL_NAME_RE.match(folder.name):
        raise ArtifactError(f"{folder}: folder name must match {MODEL_NAME_RE.pattern} (it is the model's URL name)")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise ArtifactError(f"{folder / name}: missing; an artifact needs {', '.join(REQUIRED_FILES)}")
    spec = load_spec(folder)
    model = FusionClassifier(spec)
    _load_weights(model, folder / WEIGHTS_FILE)
    model.eval()
    return Artifact(path=folder, spec=spec, model=model, metrics=_load_metrics(folder / METRICS_FILE))


def _load_weights(model: FusionClassifier, path: Path) -> None:
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_few(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes {_few(wrong)}")
        raise ArtifactError(f"{path}: weights do not match {CONFIG_FILE}: {'; '.join(parts)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _few(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _load_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: must hold a JSON object")
    return data


def save_artifact(
    folder: Path,
    spec: ArtifactSpec,
    model: FusionClassifier,
    card: str,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact folder that `load_artifact` (and so the service) accepts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE, metadata={"name": spec.name, "version": spec.version})
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    if metrics is not None:
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return folder

