"""What a training run needs beside its loop: the device, a pretrained image backbone, checkpoints."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from app.errors import UsageError
from app.model.artifact import save_artifact
from app.model.classifier import FusionClassifier
from app.model.spec import ArtifactSpec

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def load_image_weights(model: FusionClassifier, path: Path) -> None:
    """Load a torchvision state dict (resnet18, resnet50, mobilenet_v3_small; .safetensors, or a .pth read with
    `weights_only=True`, which unpickles tensors only) into the image backbone. Its classifier layer, sized for
    ImageNet's classes, is left out: the encoder's own projection replaces it."""
    net = model.encoders["image"].net
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UsageError(f"--image-weights {path}: not a readable state dict ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"--image-weights {path}: not a state dict of tensors")
    own = net.state_dict()
    head = {k for k in own if own[k].shape != state.get(k, own[k]).shape}
    missing = [k for k in own if k not in state and k not in head]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UsageError(
            f"--image-weights {path}: does not fit {model.spec.image.encoder if model.spec.image else 'the image encoder'}"
            f" ({len(missing)} missing, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    net.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    log.info("image backbone: %d tensors from %s (%s left at their initial values)", len(own) - len(head), path,
             ", ".join(sorted(head)) or "none")


def write_checkpoint(folder: Path, spec: ArtifactSpec, state: dict[str, torch.Tensor],
                      history: list[dict[str, float]]) -> None:
    """The best model so far as a servable, uncalibrated artifact (so a long run that is stopped is not lost)."""
    model = FusionClassifier(spec)
    model.load_state_dict(state)
    last = history[-1]
    card = (f"# {spec.name} (checkpoint, uncalibrated)\n\nBest model after epoch {last['epoch']} of a training run "
            f"still in progress: validation accuracy {last['val_accuracy']:.3f}, mean over input subsets "
            f"{last['val_mean_subset_accuracy']:.3f}.\n")
    save_artifact(folder, spec, model, card, metrics={"history": history})
    log.info("checkpoint: %s", folder)
