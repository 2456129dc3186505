"""`fusion-serve train --init-from ARTIFACT`: fine-tune from an existing artifact's weights.

The new model takes the artifact's architecture (modalities, labels, encoders, widths, sizes, tokenizer, fusion)
for every setting the user did not give, and starts from its `weights.safetensors` (read with safetensors, never
unpickled). A setting the user gives that makes the weights not fit (another width, fusion or tokenizer) ends in
one line naming the flag and the tensor or setting at odds; preprocessing and augmentation follow the flags, so an
old artifact is fine-tuned with the current recipe.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from app.errors import UsageError
from app.model.artifact import WEIGHTS_FILE, load_spec
from app.model.classifier import FusionClassifier
from app.model.errors import ArtifactError
from app.model.spec import ArtifactSpec

log = logging.getLogger(__name__)

# TrainConfig field -> where the artifact's config.json keeps it (section, name); () for the top level.
ARCHITECTURE: dict[str, tuple[str, ...]] = {
    "modalities": ("modalities",), "labels": ("labels",),
    "image_encoder": ("image", "encoder"), "image_size": ("image", "size"), "image_channels": ("image", "channels"),
    "image_width": ("image", "width"),
    "text_encoder": ("text", "encoder"), "tokenizer": ("text", "tokenizer", "type"),
    "max_tokens": ("text", "max_tokens"), "text_dim": ("text", "embed_dim"), "text_layers": ("text", "layers"),
    "text_heads": ("text", "heads"),
    "audio_encoder": ("audio", "encoder"), "sample_rate": ("audio", "sample_rate"),
    "clip_seconds": ("audio", "clip_seconds"), "n_fft": ("audio", "n_fft"), "hop_length": ("audio", "hop_length"),
    "n_mels": ("audio", "n_mels"), "audio_width": ("audio", "width"),
    "fusion": ("fusion", "type"), "fusion_dim": ("fusion", "dim"), "fusion_hidden": ("fusion", "hidden"),
    "fusion_heads": ("fusion", "heads"), "fusion_layers": ("fusion", "layers"), "dropout": ("fusion", "dropout"),
}  # fmt: skip
# Settings whose change makes the weights mean something else even where every tensor keeps its shape.
_MUST_MATCH = ("modalities", "labels", "tokenizer", "image_encoder", "text_encoder", "audio_encoder", "fusion")


@dataclass(frozen=True)
class Source:
    """The artifact a run starts from."""

    path: Path
    spec: ArtifactSpec
    state: dict[str, torch.Tensor]
    sha256: str

    def record(self) -> dict[str, str]:
        """What config.json (`init_from`), metrics.json and the card keep of it."""
        return {"name": self.spec.name, "version": self.spec.version, "weights_sha256": self.sha256,
                "path": str(self.path)}


def read(path: Path) -> Source:
    """The artifact at `path`: its config and its weights; UsageError naming `--init-from` when unusable."""
    path = Path(path)
    weights = path / WEIGHTS_FILE
    try:
        spec = load_spec(path)
    except ArtifactError as exc:
        raise UsageError(f"--init-from {path}: {exc}") from None
    try:
        data = weights.read_bytes()
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"--init-from {path}: {weights.name} is not a readable safetensors file ({exc})") from None
    return Source(path=path, spec=spec, state=state, sha256=hashlib.sha256(data).hexdigest())


def settings(spec: ArtifactSpec) -> dict[str, Any]:
    """The TrainConfig values that rebuild `spec`'s architecture (a missing modality's settings are left out)."""
    out: dict[str, Any] = {}
    raw = spec.model_dump()
    for name, where in ARCHITECTURE.items():
        value: Any = raw
        for key in where:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def configure(cfg: Any, given: Collection[str]) -> Any:
    """`cfg` (a TrainConfig with `init_from` set) with the artifact's architecture for every setting not in
    `given` (the fields the user set), its description, and its version plus one unless `--version` was given."""
    source = read(cfg.init_from)
    inherited = {k: v for k, v in settings(source.spec).items() if k not in given}
    if not cfg.description:
        inherited["description"] = source.spec.description
    if "version" not in given:
        inherited["version"] = str(int(source.spec.version) + 1) if source.spec.version.isdigit() else cfg.version
    return replace(cfg, **inherited)


def adopt(spec: ArtifactSpec, source: Source) -> ArtifactSpec:
    """`spec` with what the flags cannot say taken from the source: its tokenizer (a word vocabulary is part of
    the weights) and its audio band; and the record of where the weights came from."""
    update: dict[str, Any] = {"init_from": source.record()}
    if spec.text is not None and source.spec.text is not None \
            and spec.text.tokenizer.type == source.spec.text.tokenizer.type:
        update["text"] = spec.text.model_copy(update={"tokenizer": source.spec.text.tokenizer})
    if spec.audio is not None and source.spec.audio is not None:
        update["audio"] = spec.audio.model_copy(update={"f_min": source.spec.audio.f_min,
                                                        "f_max": source.spec.audio.f_max})
    return spec.model_copy(update=update)


def _differing(cfg: Any, source: Source) -> list[str]:
    """The flags (with their values) whose setting differs from the source artifact's."""

    def shown(value: Any) -> str:
        return ",".join(value) if isinstance(value, tuple) else str(value)

    out = []
    for name, theirs in settings(source.spec).items():
        ours = getattr(cfg, name)
        ours = tuple(ours) if isinstance(ours, list) else ours
        if ours != theirs:
            out.append(f"--{name.replace('_', '-')} {shown(ours)} (it has {shown(theirs)})")
    return out


def check(cfg: Any, source: Source) -> None:
    """UsageError unless the source's architecture settings that change what its weights mean are the run's."""
    theirs = settings(source.spec)
    for name in _MUST_MATCH:
        ours = getattr(cfg, name)
        ours = tuple(ours) if isinstance(ours, list) else ours
        if name in theirs and ours is not None and ours != theirs[name]:
            wrong = [d for d in _differing(cfg, source) if d.startswith(f"--{name.replace('_', '-')} ")]
            raise UsageError(f"--init-from {source.path}: {wrong[0] if wrong else name} does not fit its weights; "
                             f"leave it out to fine-tune with the artifact's own")


def load(model: FusionClassifier, cfg: Any, source: Source) -> None:
    """Copy the source's weights into `model`; every tensor must be there with its shape, else a UsageError
    naming the flags that differ from the artifact and the first tensor that does not fit."""
    own = model.state_dict()
    problems = [f"{k} is missing from it" for k in own if k not in source.state]
    problems += [f"{k} is {tuple(source.state[k].shape)} there, {tuple(v.shape)} here" for k, v in own.items()
                 if k in source.state and source.state[k].shape != v.shape]
    problems += [f"it has {k}, which this model lacks" for k in source.state if k not in own]
    if problems:
        flags = _differing(cfg, source)
        cause = ", ".join(flags) if flags else "this model"
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"--init-from {source.path}: {cause} does not fit its weights: {problems[0]}{more}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in source.state.items()})
    log.info("initialised from %s (%s v%s, weights sha256 %s)", source.path, source.spec.name, source.spec.version,
             source.sha256[:12])
