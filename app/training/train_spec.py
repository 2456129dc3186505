"""The artifact spec `fusion-serve train`'s options describe: `build_spec`. A value the spec refuses ends in one line
that names the flag as typed, never in a validation error about config.json's internal field names."""
from __future__ import annotations

from pydantic import ValidationError

from app.errors import UsageError
from app.model.spec import (
    ArtifactSpec,
    AudioSpec,
    FusionSpec,
    ImageSpec,
    TextSpec,
    TokenizerSpec,
)
from app.model.tokenizer import build_vocab
from app.training import augment
from app.training.manifest import Manifest
from app.training.options import TrainConfig, check, flag

# config.json field (section, name) -> the TrainConfig field that sets it; its flag is `--` + that, dashed.
_FIELD_FLAGS: dict[tuple[str, str], str] = {
    ("image", "size"): "image_size", ("image", "channels"): "image_channels", ("image", "width"): "image_width",
    ("image", "ink_fraction"): "ink_fraction",
    ("text", "max_tokens"): "max_tokens", ("text", "embed_dim"): "text_dim", ("text", "layers"): "text_layers",
    ("text", "heads"): "text_heads",
    ("audio", "sample_rate"): "sample_rate", ("audio", "clip_seconds"): "clip_seconds", ("audio", "n_fft"): "n_fft",
    ("audio", "hop_length"): "hop_length", ("audio", "n_mels"): "n_mels", ("audio", "width"): "audio_width",
    ("fusion", "dim"): "fusion_dim", ("fusion", "hidden"): "fusion_hidden", ("fusion", "heads"): "fusion_heads",
    ("fusion", "layers"): "fusion_layers", ("fusion", "dropout"): "dropout",
    ("name",): "name", ("version",): "version",
}  # fmt: skip


def build_spec(cfg: TrainConfig, manifest: Manifest, texts: list[str]) -> ArtifactSpec:
    """The artifact spec the flags describe (calibration filled in after training); errors name the flags."""
    check(cfg)
    mods = cfg.modalities or manifest.modalities
    unknown = [m for m in mods if m not in ("image", "text", "audio")]
    if unknown:
        raise UsageError(f"--modalities: unknown modality {unknown[0]!r}; choose from image, text, audio")
    tokenizer = build_vocab(texts) if cfg.tokenizer == "words" else TokenizerSpec(type="bytes")
    aug = augment.from_settings(cfg.augmentation, cfg.augment)
    try:
        return ArtifactSpec(
            name=cfg.name,
            version=cfg.version,
            description=cfg.description,
            labels=manifest.labels,
            modalities=tuple(mods),
            image=ImageSpec(
                encoder=cfg.image_encoder,  # type: ignore[arg-type]
                size=cfg.image_size,
                channels=cfg.image_channels,  # type: ignore[arg-type]
                mean=(0.5,) * cfg.image_channels,
                std=(0.5,) * cfg.image_channels,
                width=cfg.image_width,
                fit=cfg.image_fit,  # type: ignore[arg-type]
                polarity=cfg.image_polarity,  # type: ignore[arg-type]
                ink_fraction=cfg.ink_fraction,
            )
            if "image" in mods
            else None,
            text=TextSpec(
                encoder=cfg.text_encoder,  # type: ignore[arg-type]
                tokenizer=tokenizer,
                max_tokens=cfg.max_tokens,
                embed_dim=cfg.text_dim,
                layers=cfg.text_layers,
                heads=cfg.text_heads,
                normalize=cfg.text_normalize,  # type: ignore[arg-type]
            )
            if "text" in mods
            else None,
            audio=AudioSpec(
                encoder=cfg.audio_encoder,  # type: ignore[arg-type]
                sample_rate=cfg.sample_rate,
                clip_seconds=cfg.clip_seconds,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                n_mels=cfg.n_mels,
                width=cfg.audio_width,
                window=cfg.audio_window,  # type: ignore[arg-type]
            )
            if "audio" in mods
            else None,
            fusion=FusionSpec(
                type=cfg.fusion,  # type: ignore[arg-type]
                dim=cfg.fusion_dim,
                hidden=cfg.fusion_hidden,
                heads=cfg.fusion_heads,
                layers=cfg.fusion_layers,
                dropout=cfg.dropout,
            ),
            augmentation=aug.record() if aug is not None else {},
        )
    except ValidationError as exc:
        raise UsageError(_flag_message(exc, cfg)) from None


def _flag_message(exc: ValidationError, cfg: TrainConfig) -> str:
    error = exc.errors()[0]
    section = {"ImageSpec": ("image",), "TextSpec": ("text",), "AudioSpec": ("audio",), "FusionSpec": ("fusion",)}
    loc = section.get(exc.title, ()) + tuple(str(p) for p in error["loc"])
    name = _FIELD_FLAGS.get(loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    if name is not None:
        return f"{flag(name, cfg)}: {message}"
    return f"bad training settings: {message}"
