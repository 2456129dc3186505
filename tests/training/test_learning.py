"""Training learns: on a small learnable task, the trained model beats chance by a wide margin and beats the model
it started from; a trainer that never updates its weights fails the same check."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.cli import main
from app.inputs.preprocess import Preprocessor
from app.model.artifact import load_artifact
from app.model.classifier import FusionClassifier
from app.training import evaluation as ev
from app.training.dataset import ManifestDataset, loader
from app.training.manifest import read_manifest
from tests.training.test_train import SMALL, write_toy_manifest

CHANCE = 1 / 3


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_manifest(tmp_path_factory.mktemp("learn"), n=150, missing_audio=False)


def _test_accuracy(model: FusionClassifier, manifest: Path) -> float:
    rows = read_manifest(manifest, labels=model.spec.labels).split("test")
    dataset = ManifestDataset(rows, model.spec.labels, Preprocessor(model.spec))
    keys = [model.spec.ordered_modalities]
    return ev.accuracy(ev.predict_subsets(model, loader(dataset, 64, 0), keys)[keys[0]])


def train_and_measure(manifest: Path, out: Path) -> tuple[float, float]:
    """(test accuracy after training, test accuracy of the same model before its first step)."""
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "6", "--patience", "6",
                 "--workers", "0", "--lr", "5e-3", *SMALL]) == 0
    trained = load_artifact(out)
    torch.manual_seed(0)  # train seeds torch with --seed (0) just before it builds the model
    untrained = FusionClassifier(trained.spec).eval()
    return _test_accuracy(trained.model, manifest), _test_accuracy(untrained, manifest)


def check_learned(trained: float, untrained: float) -> None:
    assert trained >= CHANCE + 0.45, f"accuracy {trained:.2f} is not far above chance ({CHANCE:.2f})"
    assert trained >= untrained + 0.3, f"accuracy {trained:.2f} is not well above the untrained model's {untrained:.2f}"


def test_training_learns_a_learnable_task(toy: Path, tmp_path: Path) -> None:
    check_learned(*train_and_measure(toy, tmp_path / "model"))


def test_a_trainer_that_never_steps_fails_the_check(toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    trained, untrained = train_and_measure(toy, tmp_path / "model")
    with pytest.raises(AssertionError):
        check_learned(trained, untrained)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_learns_on_cuda_with_mixed_precision(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert main(["train", "--manifest", str(toy), "--out", str(out), "--epochs", "6", "--patience", "6",
                 "--workers", "2", "--lr", "5e-3", "--device", "cuda", "--accumulate-steps", "2", *SMALL]) == 0
    trained = load_artifact(out)  # saved from the GPU, loaded on the CPU
    assert _test_accuracy(trained.model, toy) >= CHANCE + 0.45
