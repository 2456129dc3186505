"""Which models a models folder holds, and which of them is the default."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from app.errors import ModelNotFound
from app.model.artifact import MODEL_NAME_RE, is_artifact_dir
from app.model.errors import ArtifactError

M = TypeVar("M")


def find_models(root: Path, default_model: str | None) -> tuple[list[Path], str]:
    """Every artifact folder under `root` (sorted) and the default model's name; ArtifactError if there is none, or
    several and no (valid) default."""
    if not root.is_dir():
        raise ArtifactError(f"{root}: models directory not found (set FUSION_MODELS_DIR or --models-dir)")
    folders = sorted(p for p in root.iterdir() if is_artifact_dir(p))
    if not folders:
        raise ArtifactError(f"{root}: no model artifacts found (each model is a folder with a config.json)")
    names = [f.name for f in folders]
    if default_model is not None:
        if default_model not in names:
            raise ArtifactError(
                f"FUSION_DEFAULT_MODEL={default_model!r} is not among the models in {root}: {', '.join(names)}"
            )
        return folders, default_model
    if len(folders) == 1:
        return folders, names[0]
    raise ArtifactError(f"{root} holds several models ({', '.join(names)}); set FUSION_DEFAULT_MODEL to choose one")


def lookup(models: Mapping[str, M], default: str | None, name: str | None) -> M:
    """The model named `name` (None: the default one) among `models`; ModelNotFound otherwise."""
    key = default if name is None else name
    if key is None or not MODEL_NAME_RE.match(key) or key not in models:
        raise ModelNotFound(f"no model named {name!r}; GET /v1/models lists the {len(models)} served")
    return models[key]
