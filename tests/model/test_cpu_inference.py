"""CPU rewrites of a trained model: the same answers as the model as trained, or the model as trained."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from app.engine.predictor import Predictor, warmup_sizes
from app.model import cpu_inference
from app.model.artifact import load_artifact, save_artifact
from app.model.batch import Sample
from app.model.spec import AudioSpec, ImageSpec
from tests.helpers import tiny_spec, write_tiny_artifact


def trained_like(folder: Path, **encoders: object) -> Path:
    """An artifact whose batch norms hold statistics and affine weights far from their initial values, as after
    training (folding an untrained batch norm, the identity, would prove nothing). `encoders`: image=/audio= specs
    replacing the tiny model's."""
    spec = tiny_spec(name=folder.name).model_copy(update=encoders)
    path = write_tiny_artifact(folder, spec)
    artifact = load_artifact(path)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in artifact.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=g))
                module.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.2)
                module.weight.copy_(torch.randn(n, generator=g))
                module.bias.copy_(torch.randn(n, generator=g))
    return save_artifact(path, artifact.spec, artifact.model, "# trained-like\n", metrics={})


def mixed_samples(n: int = 6) -> list[Sample]:
    g = torch.Generator().manual_seed(2)
    samples = []
    for i in range(n):
        samples.append(
            Sample(
                image=torch.rand(1, 16, 16, generator=g) * 2 - 1 if i % 3 != 1 else None,
                text=torch.randint(2, 200, (3 + i,), generator=g) if i % 3 != 2 else None,
                audio=torch.randn(2000, generator=g) * 0.2 if i % 2 == 0 else None,
            )
        )
    return samples


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"audio": AudioSpec(sample_rate=8000, clip_seconds=0.25, n_fft=128, hop_length=64, n_mels=16, width=4,
                            encoder="cnn")},
        {"image": ImageSpec(size=32, channels=3, mean=[0.5] * 3, std=[0.5] * 3, encoder="mobilenet_v3_small")},
    ],
    ids=["cnn+tcnn", "2d-audio-cnn", "torchvision-backbone"],
)
def test_rewritten_model_gives_the_probabilities_of_the_model_as_trained(
    tmp_path: Path, overrides: dict[str, object]
) -> None:
    path = trained_like(tmp_path / "m", **overrides)
    as_trained = Predictor(load_artifact(path), torch.device("cpu"), cpu_rewrites=False)
    rewritten = Predictor(load_artifact(path), torch.device("cpu"))
    assert rewritten.model is not as_trained.model
    assert any(isinstance(m, cpu_inference.ChannelsLast) for m in rewritten.model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in rewritten.model.modules())
    samples = mixed_samples()
    if "image" in overrides:  # a 3-channel, 32-pixel image model
        samples = [Sample(image=None if s.image is None else torch.rand(3, 32, 32) * 2 - 1, text=s.text,
                          audio=s.audio) for s in samples]
    for got, want in zip(rewritten.predict(samples), as_trained.predict(samples)):
        assert abs(got.probabilities - want.probabilities).max() < 1e-5


def test_rewrites_that_change_the_answers_are_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = trained_like(tmp_path / "m")

    class Off(nn.Module):  # a "rewrite" that scrambles the features
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).flip(-1)

    monkeypatch.setattr(cpu_inference, "_rewrite", Off)
    artifact = load_artifact(path)
    with caplog.at_level(logging.WARNING, logger="app.model.cpu_inference"):
        predictor = Predictor(artifact, torch.device("cpu"))
    assert predictor.model is artifact.model
    assert "serving the model as trained" in caplog.text


def test_rewrites_can_be_switched_off(tmp_path: Path) -> None:
    artifact = load_artifact(trained_like(tmp_path / "m"))
    predictor = Predictor(artifact, torch.device("cpu"), cpu_rewrites=False)
    assert predictor.model is artifact.model
    assert predictor.predict(mixed_samples())  # and it still serves


def test_a_model_without_convolutions_is_served_as_trained(tmp_path: Path) -> None:
    artifact = load_artifact(write_tiny_artifact(tmp_path / "t", tiny_spec(name="t", modalities=("text",))))
    assert Predictor(artifact, torch.device("cpu")).model is artifact.model


def test_warmup_ladder_covers_one_to_the_largest_batch() -> None:
    assert warmup_sizes(64) == [64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1]
    assert warmup_sizes(100)[0] == 100 and warmup_sizes(1) == [1]
