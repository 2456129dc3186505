"""Faster CPU equivalents of a trained model's convolutional parts, for serving (never for training).

Two rewrites, each exact up to float rounding:
- BatchNorm folded into the convolution before it (`torch.fx.experimental.optimization.fuse`): one op instead of
  two, and no normalisation pass over the activations.
- Channels-last (NHWC) activations and weights for 2-D convolutions: oneDNN computes them without reordering every
  layer's input and output from and to NCHW, which dominates small convolutions on CPU (the default model's image
  encoder runs a batch of 64 in ~60% of the time).

`optimize_for_cpu` applies them to each encoder's convolutional networks and checks that the rewritten model
answers an example batch as the original did; where it does not, the original is kept.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from app.model.batch import Batch
from app.model.classifier import FusionClassifier

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Logits of the rewritten model may differ from the original's by float rounding only.
_TOLERANCE = 1e-3


class ChannelsLast(nn.Module):
    """Runs `net` (holding 2-D convolutions) on channels-last inputs; its outputs are whatever `net` returns."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))


def _has(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> bool:
    return any(isinstance(m, kinds) for m in module.modules())


def _fold_batch_norms(net: nn.Module) -> nn.Module:
    """`net` with each Conv -> BatchNorm pair folded into one convolution; `net` itself where it cannot be traced."""
    try:
        return fuse(net)
    except Exception as exc:  # noqa: BLE001 - control flow FX cannot trace: keep the module as it is
        log.debug("batch norms of %s not folded: %s", type(net).__name__, exc)
        return net


def _rewrite(net: nn.Module) -> nn.Module:
    folded = _fold_batch_norms(net)
    return ChannelsLast(folded) if _has(folded, (nn.Conv2d,)) else folded


def optimize_for_cpu(model: FusionClassifier, example: Batch) -> FusionClassifier:
    """A copy of `model` (in eval mode) whose encoders' convolutional networks are rewritten for CPU inference, if
    it answers `example` as `model` does; else `model` itself."""
    optimized = copy.deepcopy(model).eval()
    rewritten: list[str] = []
    for encoder_name, encoder in optimized.encoders.items():
        for child_name, child in list(encoder.named_children()):
            if _has(child, _CONVS):
                setattr(encoder, child_name, _rewrite(child))
                rewritten.append(f"{encoder_name}.{child_name}")
    if not rewritten:
        return model
    difference = _max_difference(model, optimized, example)
    if difference > _TOLERANCE:
        log.warning(
            "CPU rewrites of %s changed the logits by %.2g (over %g); serving the model as trained",
            ", ".join(rewritten), difference, _TOLERANCE,
        )
        return model
    log.info("CPU rewrites (batch norms folded, channels-last): %s", ", ".join(rewritten))
    return optimized


def _max_difference(a: Callable[[Batch], torch.Tensor], b: Callable[[Batch], torch.Tensor], batch: Batch) -> float:
    with torch.inference_mode():
        return float((a(batch) - b(batch)).abs().max())
