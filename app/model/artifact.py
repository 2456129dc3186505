"""Model artifacts on disk: `config.json` + `weights.safetensors` + `card.md` (+ optional `metrics.json`).

Loading validates everything and raises ArtifactError naming the file at fault; nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from app.model.classifier import FusionClassifier
from app.model.errors import ArtifactError
from app.model.spec import ArtifactSpec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.md"
METRICS_FILE = "metrics.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
# Artifacts are read by other users (a container's non-root user, a CI runner): world-readable, whatever the umask.
FILE_MODE = 0o644
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
    except PermissionError:
        raise ArtifactError(
            f"{path}: this user (uid {os.getuid()}) may not read it; make the artifact readable (chmod a+r)"
        ) from None
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


def write_file(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` atomically (a temporary file in the same folder, then a rename: a reader sees the old
    file or the new one, never half of one) and readable by everyone (FILE_MODE)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(
    folder: Path,
    spec: ArtifactSpec,
    model: FusionClassifier,
    card: str,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact folder that `load_artifact` (and so the service) accepts; the weights last, so that a
    folder with new weights has the config that matches them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    write_file(folder / CONFIG_FILE, spec.model_dump_json(indent=2) + "\n")
    write_file(folder / CARD_FILE, card)
    if metrics is not None:
        write_file(folder / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_file(folder / WEIGHTS_FILE, save(state, metadata={"name": spec.name, "version": spec.version}))
    return folder
