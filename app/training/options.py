"""`fusion-serve train`'s options: TrainConfig and its flags (the artifact spec they describe:
app.training.train_spec).

A bad value ends in one line that names the flag as typed (`--text-dim 30 must be a multiple of --text-heads 4`),
never in a validation error about config.json's internal field names.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import UsageError
from app.model.spec import FUSION_TYPES
from app.training import augment


@dataclass
class TrainConfig:
    """Every training option; the CLI flags map one-to-one onto these fields (augmentation: `--aug-*`)."""

    manifest: Path
    out: Path
    name: str = "digits"
    version: str = "1"
    description: str = ""
    seed: int = 0
    modalities: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    # optimisation
    epochs: int = 20
    patience: int = 4
    max_steps: int | None = None
    batch_size: int = 64
    accumulate_steps: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.01
    modality_dropout: float = 0.35
    threads: int = 0
    workers: int = 1
    device: str = "auto"
    amp: bool = True
    checkpoint: Path | None = None
    init_from: Path | None = None  # an artifact folder to fine-tune (app/training/init_from.py)
    # augmentation: flat `<modality>_<name>` settings given on the command line (the rest take their defaults)
    augment: bool = True
    augmentation: dict[str, Any] = field(default_factory=dict)
    # image
    image_encoder: str = "cnn"
    image_size: int = 28
    image_channels: int = 1
    image_width: int = 16
    image_fit: str = "ink"
    image_polarity: str = "light_on_dark"
    ink_fraction: float = 0.72
    image_weights: Path | None = None
    # text
    text_encoder: str = "transformer"
    tokenizer: str = "bytes"
    max_tokens: int = 64
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_normalize: str = "digits"
    # audio
    audio_encoder: str = "tcnn"
    sample_rate: int = 16000
    clip_seconds: float = 1.5
    n_fft: int = 400
    hop_length: int = 240
    n_mels: int = 40
    audio_width: int = 16
    audio_window: str = "speech"
    # fusion
    fusion: str = "attention"
    fusion_dim: int = 64
    fusion_hidden: int = 128
    fusion_heads: int = 4
    fusion_layers: int = 1
    dropout: float = 0.1
    compare_fusions: bool = False


def flag(name: str, cfg: TrainConfig | None = None) -> str:
    """`--the-flag` (with its value when `cfg` is given) for a TrainConfig field."""
    text = "--" + name.replace("_", "-")
    return f"{text} {getattr(cfg, name)}" if cfg is not None else text


def check(cfg: TrainConfig) -> None:
    """The checks that span several flags, and those of the optimisation flags; raises UsageError."""
    pairs = (("text_dim", "text_heads", cfg.text_encoder == "transformer"), ("fusion_dim", "fusion_heads",
             cfg.fusion == "attention"))
    for dim, heads, applies in pairs:
        if applies and getattr(cfg, heads) > 0 and getattr(cfg, dim) % getattr(cfg, heads):
            raise UsageError(f"{flag(dim, cfg)} must be a multiple of {flag(heads, cfg)}")
    if cfg.n_fft > round(cfg.sample_rate * cfg.clip_seconds):
        raise UsageError(f"{flag('n_fft', cfg)} is longer than the clip ({flag('clip_seconds', cfg)} at "
                         f"{flag('sample_rate', cfg)} is {round(cfg.sample_rate * cfg.clip_seconds)} samples)")
    for name, low in (("epochs", 1), ("batch_size", 1), ("accumulate_steps", 1), ("patience", 1), ("workers", 0),
                      ("threads", 0)):
        if getattr(cfg, name) < low:
            raise UsageError(f"{flag(name, cfg)} must be at least {low}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise UsageError(f"{flag('max_steps', cfg)} must be at least 1")
    if not cfg.lr > 0:
        raise UsageError(f"{flag('lr', cfg)} must be positive")
    if not 0 <= cfg.modality_dropout < 1:
        raise UsageError(f"{flag('modality_dropout', cfg)} must be within [0, 1)")
    if cfg.image_weights is not None and not Path(cfg.image_weights).is_file():
        raise UsageError(f"{flag('image_weights', cfg)}: no such file")
    if cfg.image_weights is not None and cfg.image_encoder == "cnn":
        raise UsageError(f"{flag('image_weights', cfg)} needs a torchvision --image-encoder "
                         "(resnet18, resnet50, mobilenet_v3_small), not cnn")
    augment.from_settings(cfg.augmentation, cfg.augment)  # raises UsageError naming the flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CLI flags: one per TrainConfig field."""
    d = TrainConfig(manifest=Path("."), out=Path("."))
    parser.add_argument("--manifest", type=Path, required=True, help="JSONL manifest (see README)")
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write, e.g. models/mymodel")
    parser.add_argument("--name", default=None, help="model name (default: the out folder's name)")
    parser.add_argument("--version", default=None, help=f"(default: {d.version}; with --init-from, its version + 1)")
    parser.add_argument("--description", default=d.description)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--modalities", default=None, help="comma list; default: those in the manifest")
    parser.add_argument("--labels", default=None, help="comma list fixing the label set and order")
    g = parser.add_argument_group("optimisation")
    for name in ("epochs", "patience", "batch_size", "threads"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    g.add_argument("--accumulate-steps", type=int, default=d.accumulate_steps,
                   help="batches whose gradients are summed before each optimiser step (default: %(default)s)")
    g.add_argument("--workers", type=int, default=d.workers,
                   help="data-loading processes (decode, augment, preprocess); 0: in the training process")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    for name in ("lr", "weight_decay", "modality_dropout"):
        g.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    g.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda or cuda:N")
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="after each epoch that improves, write the model so far here as an (uncalibrated) artifact")
    g.add_argument("--init-from", type=Path, default=None, metavar="ARTIFACT",
                   help="fine-tune: start from this artifact folder's weights, with its architecture (modalities, "
                        "labels, encoders, widths, sizes, tokenizer, fusion) unless a flag sets it; preprocessing "
                        "and augmentation follow the flags. From a --checkpoint folder, a stopped run continues (with a "
                        "new learning-rate schedule; give --version to keep its version)")
    g.add_argument("--no-amp", dest="amp", action="store_false",
                   help="on CUDA, train in float32 rather than with bfloat16 autocast")
    augment.add_arguments(parser)
    g = parser.add_argument_group("image encoder and preprocessing")
    g.add_argument("--image-encoder", choices=["cnn", "resnet18", "resnet50", "mobilenet_v3_small"], default=None,
                   help=f"(default: {d.image_encoder})")
    for name in ("image_size", "image_channels", "image_width"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"(default: {getattr(d, name)})",
                       **({"choices": [1, 3]} if name == "image_channels" else {}))
    g.add_argument("--image-fit", choices=["ink", "stretch"], default=d.image_fit,
                   help="ink: the square around the ink, over a flattened background; stretch: the whole picture")
    g.add_argument("--image-polarity", choices=["light_on_dark", "as_is"], default=d.image_polarity,
                   help="light_on_dark: dark ink on light paper is inverted (the ink fit always does)")
    g.add_argument("--ink-fraction", type=float, default=d.ink_fraction,
                   help="with --image-fit ink: the share of the side the ink fills")
    g.add_argument("--image-weights", type=Path, default=None,
                   help="a torchvision state dict (.pth or .safetensors) for a torchvision --image-encoder")
    g = parser.add_argument_group("text encoder and preprocessing")
    g.add_argument("--text-encoder", choices=["transformer", "lstm", "gru"], default=None,
                   help=f"(default: {d.text_encoder})")
    g.add_argument("--tokenizer", choices=["bytes", "words"], default=None, help=f"(default: {d.tokenizer})")
    for name in ("max_tokens", "text_dim", "text_layers", "text_heads"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"(default: {getattr(d, name)})")
    g.add_argument("--text-normalize", choices=["digits", "nfc"], default=d.text_normalize,
                   help="digits: every script's digits and emoji keycaps read as ASCII digits")
    g = parser.add_argument_group("audio encoder and preprocessing")
    g.add_argument("--audio-encoder", choices=["tcnn", "cnn"], default=None, help=f"(default: {d.audio_encoder})")
    for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "audio_width"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"(default: {getattr(d, name)})")
    g.add_argument("--clip-seconds", type=float, default=None, help=f"(default: {d.clip_seconds})")
    g.add_argument("--audio-window", choices=["speech", "loudest"], default=d.audio_window,
                   help="which clip-length window of a longer recording the model hears")
    g = parser.add_argument_group("fusion")
    g.add_argument("--fusion", choices=list(FUSION_TYPES), default=None, help=f"(default: {d.fusion})")
    for name in ("fusion_dim", "fusion_hidden", "fusion_heads", "fusion_layers"):
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"(default: {getattr(d, name)})")
    g.add_argument("--dropout", type=float, default=None, help=f"(default: {d.dropout})")
    g.add_argument("--compare-fusions", action="store_true",
                   help="also train every other fusion type on the same data and tabulate them in the card")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    values["name"] = args.name or Path(args.out).name
    values["augment"] = not getattr(args, "no_augment", False)
    values["augmentation"] = {k.removeprefix("aug_"): v for k, v in vars(args).items()
                              if k.startswith("aug_") and v is not None}
    for key in ("modalities", "labels"):
        if isinstance(values.get(key), str):
            values[key] = tuple(x.strip() for x in values[key].split(",") if x.strip())
    cfg = TrainConfig(**values)
    if cfg.init_from is not None:  # the architecture flags not given (None above) come from the artifact
        from app.training import init_from

        cfg = init_from.configure(cfg, given={k for k in values if k != "name"})
    return cfg
