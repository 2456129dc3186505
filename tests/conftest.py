from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.engine.engine import TorchEngine
from app.model.spec import FUSION_TYPES
from tests.helpers import tiny_spec, write_tiny_artifact
from tests.server import Server, running_server

# Tests serve many small throwaway models: exporting each to ONNX (seconds per part) would dominate the suite, so
# they run eager torch unless a test asks for a runtime (FUSION_RUNTIME's default, auto, is tested on its own in
# tests/engine/test_runtime.py, and on the shipped model in tests/test_shipped_model.py).
os.environ.setdefault("FUSION_RUNTIME", "torch")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs_tool("espeak-ng", apt="espeak-ng")`: skipped where the program is missing, except under
    CI=true, where CI was meant to install it: there a missing tool fails the test instead of hiding it."""
    for marker in item.iter_markers("needs_tool"):
        tool = marker.args[0]
        if shutil.which(tool) is not None:
            continue
        package = marker.kwargs.get("apt", tool)
        message = f"{tool} is not installed (Debian package {package}; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " and CI=true: CI must run this test", pytrace=False)
        pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding one tiny tri-modal artifact named `tiny`."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_artifact(root / "tiny")
    return root


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny artifact per fusion type, plus an image+text-only one."""
    root = tmp_path_factory.mktemp("zoo")
    for i, fusion in enumerate(FUSION_TYPES):
        write_tiny_artifact(root / f"fusion-{fusion}", tiny_spec(name=f"fusion-{fusion}", fusion=fusion), seed=i)
    write_tiny_artifact(root / "no-audio", tiny_spec(name="no-audio", modalities=("image", "text")))
    return root


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained-like tri-modal artifact `m` whose five parts were exported for ONNX Runtime once, cached in its
    own folder (copy the folder to serve it without exporting again)."""
    from app.engine.predictor import Predictor
    from app.engine.runtime import RuntimeOptions
    from app.model.artifact import load_artifact
    from tests.model.test_cpu_inference import trained_like

    root = tmp_path_factory.mktemp("exported")
    folder = trained_like(root / "m")
    served = Predictor(load_artifact(folder), torch.device("cpu"),
                       runtime=RuntimeOptions(requested="onnxruntime", cache_dir=root / "unused"))
    assert served.runtime.onnx_parts == ("all", "audio", "fusion", "image", "text"), served.runtime
    return folder


@pytest.fixture(scope="module")
def server(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir) as s:
        yield s


@pytest.fixture()
def held_warmup(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Model warm-up waits until the returned event is set (so a test can watch the service before it is ready)."""
    release = threading.Event()
    original = TorchEngine.warmup

    def slow_warmup(self: TorchEngine) -> None:
        release.wait(20)
        original(self)

    monkeypatch.setattr(TorchEngine, "warmup", slow_warmup)
    yield release
    release.set()
