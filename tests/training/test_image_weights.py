"""`--image-weights`: a torchvision state dict from a local file initialises the image backbone (no downloads)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from app.cli import main
from app.errors import UsageError
from app.model.classifier import FusionClassifier
from app.model.spec import ArtifactSpec, ImageSpec
from app.training.train import load_image_weights
from tests.training.test_train import SMALL, write_toy_manifest


def _spec(encoder: str) -> ArtifactSpec:
    return ArtifactSpec(name="m", labels=("a", "b"), modalities=("image",), image=ImageSpec(encoder=encoder, size=32))


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)  # weights that differ from any a model would start from
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_takes_the_file_weights_but_not_its_imagenet_head(
    tmp_path: Path, resnet18_state: dict[str, torch.Tensor], suffix: str
) -> None:
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(resnet18_state, path)
    else:
        save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    model = FusionClassifier(_spec("resnet18"))
    head_before = model.encoders["image"].net.fc.weight.clone()
    load_image_weights(model, path)
    net = model.encoders["image"].net.state_dict()
    for name, tensor in resnet18_state.items():
        if not name.startswith("fc."):
            assert torch.equal(net[name], tensor), name
    assert torch.equal(model.encoders["image"].net.fc.weight, head_before)  # sized for the model, not ImageNet


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(UsageError, match="does not fit resnet18"):
        load_image_weights(FusionClassifier(_spec("resnet18")), path)


def test_a_pickle_of_anything_but_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "note": object()}, path)  # weights_only loading refuses the object
    with pytest.raises(UsageError, match="not a readable state dict"):
        load_image_weights(FusionClassifier(_spec("resnet18")), path)


def test_train_with_pretrained_backbone(tmp_path: Path) -> None:
    manifest = write_toy_manifest(tmp_path, n=30)
    weights = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
    out = tmp_path / "model"
    assert main(["train", "--manifest", str(manifest), "--out", str(out), "--epochs", "1", "--max-steps", "1",
                 "--workers", "0", "--modalities", "image", "--image-encoder", "mobilenet_v3_small",
                 "--image-size", "32", "--image-weights", str(weights), *SMALL]) == 0
    assert (out / "weights.safetensors").is_file()
