"""The engine: which models it serves, which one is the default, and what it refuses at startup."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.engine.config import EngineConfig
from app.engine.engine import TorchEngine
from app.model.errors import ArtifactError
from tests.helpers import tiny_spec, write_tiny_artifact


def engine_for(settings: Settings) -> TorchEngine:
    return TorchEngine(EngineConfig.from_settings(settings))


def test_engine_needs_a_default_among_several(tmp_path: Path) -> None:
    write_tiny_artifact(tmp_path / "a")
    write_tiny_artifact(tmp_path / "b", tiny_spec(name="b"))
    with pytest.raises(ArtifactError, match="FUSION_DEFAULT_MODEL"):
        engine_for(Settings(models_dir=tmp_path)).load()
    with pytest.raises(ArtifactError, match="'c' is not among"):
        engine_for(Settings(models_dir=tmp_path, default_model="c")).load()
    engine = engine_for(Settings(models_dir=tmp_path, default_model="b"))
    engine.load()
    assert engine.get().name == "b" and set(engine.models) == {"a", "b"}


def test_engine_with_no_models(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no model artifacts"):
        engine_for(Settings(models_dir=tmp_path)).load()
    with pytest.raises(ArtifactError, match="models directory not found"):
        engine_for(Settings(models_dir=tmp_path / "nope")).load()
