"""The artifact's `config.json` schema: architecture, preprocessing, labels and calibration of one model."""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["image", "text", "audio"]
MODALITIES: tuple[Modality, ...] = ("image", "text", "audio")
FusionType = Literal["concat", "weighted_sum", "product", "gated", "attention", "late"]
FUSION_TYPES: tuple[FusionType, ...] = ("concat", "weighted_sum", "product", "gated", "attention", "late")
ImageEncoderType = Literal["cnn", "resnet18", "resnet50", "mobilenet_v3_small"]
TextEncoderType = Literal["transformer", "lstm", "gru"]
AudioEncoderType = Literal["tcnn", "cnn"]


def subset_key(modalities: Iterable[str]) -> str:
    """Canonical name of a modality subset: its members in MODALITIES order joined by '+', e.g. 'image+audio'."""
    present = set(modalities)
    return "+".join(m for m in MODALITIES if m in present)


def _nonempty_subsets(modalities: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [c for r in range(1, len(modalities) + 1) for c in itertools.combinations(modalities, r)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageSpec(_Strict):
    """Image encoder and its preprocessing: the upload is converted to `channels`, resized to `size`²."""

    encoder: ImageEncoderType = "cnn"
    size: int = Field(28, ge=8, le=1024)
    channels: Literal[1, 3] = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    width: int = Field(32, ge=4, le=512, description="Base channel count of the small CNN.")
    polarity: Literal["as_is", "light_on_dark"] = Field(
        "as_is", description="light_on_dark: pictures whose ink is darker than their background are inverted."
    )
    fit: Literal["stretch", "ink"] = Field(
        "stretch",
        description="stretch: the whole picture resized to size²; ink: the square around the ink, as ink strength "
        "over a flattened background (see app/ink.py).",
    )
    ink_fraction: float = Field(0.72, gt=0.1, le=1.0, description="With fit=ink: the share of the side the ink fills.")

    @model_validator(mode="after")
    def _norm_matches_channels(self) -> ImageSpec:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"image.mean and image.std need {self.channels} value(s), one per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("image.std values must be positive")
        return self


class TokenizerSpec(_Strict):
    """`bytes`: UTF-8 bytes are the tokens. `words`: a vocabulary built at training time."""

    type: Literal["bytes", "words"] = "bytes"
    vocab: tuple[str, ...] = ()
    lowercase: bool = True

    @model_validator(mode="after")
    def _vocab_for_words(self) -> TokenizerSpec:
        if self.type == "words" and not self.vocab:
            raise ValueError("text.tokenizer.vocab must list the words of a 'words' tokenizer")
        if self.type == "bytes" and self.vocab:
            raise ValueError("text.tokenizer.vocab must be empty for a 'bytes' tokenizer")
        return self


class TextSpec(_Strict):
    """Text encoder and tokenizer; texts are truncated to `max_tokens` tokens."""

    encoder: TextEncoderType = "transformer"
    tokenizer: TokenizerSpec = TokenizerSpec()
    max_tokens: int = Field(96, ge=1, le=4096)
    embed_dim: int = Field(64, ge=8, le=2048)
    layers: int = Field(2, ge=1, le=24)
    heads: int = Field(4, ge=1, le=32)
    normalize: Literal["nfc", "digits"] = Field(
        "nfc", description="digits: NFKC, emoji keycaps and every script's decimal digits folded to ASCII digits."
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> TextSpec:
        if self.encoder == "transformer" and self.embed_dim % self.heads:
            raise ValueError("text.embed_dim must be a multiple of text.heads")
        return self


class AudioSpec(_Strict):
    """Audio preprocessing (resample, downmix, crop/pad) and the log-mel front end of its encoder.

    `tcnn` convolves over time with the mel bins as channels (cheap; keyword-spotting style); `cnn` is the 2-D
    small CNN over the spectrogram image.
    """

    encoder: AudioEncoderType = "tcnn"
    sample_rate: int = Field(16000, ge=1000, le=192000)
    clip_seconds: float = Field(1.5, gt=0, le=60)
    n_fft: int = Field(400, ge=16)
    hop_length: int = Field(160, ge=1)
    n_mels: int = Field(64, ge=8, le=256)
    f_min: float = Field(20.0, ge=0)
    f_max: float | None = None
    width: int = Field(32, ge=4, le=512)
    window: Literal["loudest", "speech"] = Field(
        "loudest", description="Which clip-length window of a longer recording: the loudest, or the one centred on speech."
    )

    @property
    def clip_samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)

    @model_validator(mode="after")
    def _band(self) -> AudioSpec:
        top = self.f_max if self.f_max is not None else self.sample_rate / 2
        if not self.f_min < top <= self.sample_rate / 2:
            raise ValueError("audio needs f_min < f_max <= sample_rate / 2")
        if self.n_fft > self.clip_samples:
            raise ValueError("audio.n_fft is longer than the clip")
        return self


class FusionSpec(_Strict):
    """How modality features are combined; `dim` is the shared feature size every encoder projects to."""

    type: FusionType = "attention"
    dim: int = Field(128, ge=8, le=4096)
    hidden: int = Field(256, ge=8, le=8192)
    dropout: float = Field(0.1, ge=0, lt=1)
    heads: int = Field(4, ge=1, le=32)
    layers: int = Field(1, ge=1, le=12)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> FusionSpec:
        if self.type == "attention" and self.dim % self.heads:
            raise ValueError("fusion.dim must be a multiple of fusion.heads")
        return self


class ArtifactSpec(_Strict):
    """Everything needed to rebuild the model and preprocess its inputs, saved as `config.json`."""

    format_version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field("1", min_length=1, max_length=64)
    description: str = ""
    labels: tuple[str, ...] = Field(min_length=2)
    modalities: tuple[Modality, ...] = Field(min_length=1)
    image: ImageSpec | None = None
    text: TextSpec | None = None
    audio: AudioSpec | None = None
    fusion: FusionSpec = FusionSpec()
    temperature: float = Field(1.0, gt=0, description="Calibration temperature for subsets without their own.")
    subset_temperatures: dict[str, float] = Field(
        default_factory=dict,
        description="Temperature per modality subset given at prediction time, e.g. {'image+text': 1.3}.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Compute dtype on CUDA; the CPU always computes in float32."
    )
    augmentation: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="The training-time augmentation the weights were trained with (a record; serving ignores it).",
    )
    init_from: dict[str, str] = Field(
        default_factory=dict,
        description="The artifact whose weights training started from (name, version, sha256 of its weights file; "
        "`train --init-from`); a record, serving ignores it.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ArtifactSpec:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError("modalities must be unique")
        for m in MODALITIES:
            has_spec = getattr(self, m) is not None
            if (m in self.modalities) != has_spec:
                raise ValueError(f"modality '{m}' must be listed in modalities exactly when its section is present")
        if self.image is None and self.text is None and self.audio is None:
            raise ValueError("at least one modality section is required")
        valid = {subset_key(c) for c in _nonempty_subsets(self.ordered_modalities)}
        for key, t in self.subset_temperatures.items():
            if key not in valid:
                raise ValueError(f"subset_temperatures: {key!r} is not a subset of {'+'.join(self.ordered_modalities)}")
            if not t > 0:
                raise ValueError(f"subset_temperatures[{key!r}] must be positive")
        return self

    def temperature_for(self, modalities: Iterable[str]) -> float:
        """The calibration temperature for a prediction made from `modalities`."""
        return self.subset_temperatures.get(subset_key(modalities), self.temperature)

    @property
    def ordered_modalities(self) -> tuple[Modality, ...]:
        """This model's modalities in the canonical order (image, text, audio)."""
        return tuple(m for m in MODALITIES if m in self.modalities)
