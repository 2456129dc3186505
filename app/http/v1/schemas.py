"""Response bodies of the HTTP API (they are what /docs shows)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code.", examples=["unsupported_media_type"])
    message: str = Field(description="What went wrong and what to change.")
    request_id: str | None = Field(None, description="Quote it when reporting a problem.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class TopEntry(BaseModel):
    label: str
    probability: float


class Timing(BaseModel):
    preprocess_ms: float = Field(description="Decoding and preprocessing of this request.")
    queue_ms: float = Field(description="Time waiting for the model (batch formation included).")
    inference_ms: float = Field(description="Forward pass of the batch this request ran in.")
    total_ms: float = Field(description="From the request's arrival to the response.")
    batch_size: int = Field(description="How many requests shared the forward pass.")


class ModalityAnswer(BaseModel):
    label: str = Field(description="The label this input alone makes most probable.")
    probability: float = Field(description="Its calibrated probability from this input alone.")


class FusionInternals(BaseModel):
    """What the model's fusion computes about the inputs, for this request (only the fields of its type)."""

    type: str = Field(description="The fusion type: concat, weighted_sum, product, gated, attention or late.")
    weights: dict[str, float] | None = Field(
        None, description="weighted_sum: the learned weight of each sent input, renormalised over them (sums to 1)."
    )
    gates: dict[str, float] | None = Field(
        None, description="gated: the gate value of each sent input for this request (softmax over them, sums to 1)."
    )
    attention: list[dict[str, float]] | None = Field(
        None,
        description="attention: per transformer layer, the [CLS] token's attention to each sent input's token (mean "
        "over heads); 1 - their sum is its attention to itself. concat, product and late report nothing.",
    )


class Explanation(BaseModel):
    """Why the model answered as it did (only with `?explain=true`)."""

    baseline: float = Field(description="v(no input) = 1 / number of labels.")
    attributions: dict[str, dict[str, float]] = Field(
        description="For each label of `top`: each sent input's exact Shapley value, where the value of a subset S "
        "of the sent inputs is the calibrated probability of the label from S alone (S's own calibration "
        "temperature). A label's values sum to its probability minus `baseline`."
    )
    subsets: dict[str, dict[str, float]] = Field(
        description="For each non-empty subset of the sent inputs ('image', 'image+audio', ...): the calibrated "
        "probability of each label of `top` from that subset alone; the full set's are the answer itself."
    )
    modalities: dict[str, ModalityAnswer] = Field(description="Each sent input's own answer, from it alone.")
    agreement: bool = Field(description="Whether every sent input alone gives the same top label.")
    conflict: bool = Field(
        description="Whether some input alone gives another label than the answer a calibrated probability of 0.8 "
        "or more."
    )
    conflicting: list[str] = Field(description="The inputs in conflict with the answer (see `conflict`).")
    fusion: FusionInternals


class PredictResponse(BaseModel):
    model: str
    version: str
    probabilities: dict[str, float] = Field(description="Calibrated probability of every label; they sum to 1.")
    top: list[TopEntry] = Field(description="The `top_k` most probable labels, most probable first.")
    modalities: list[str] = Field(description="The inputs the prediction used.")
    timing: Timing
    explanation: Explanation | None = Field(None, description="Only with `?explain=true`.")


class Preprocessing(BaseModel):
    image_size: int | None = None
    image_channels: int | None = None
    sample_rate: int | None = None
    clip_seconds: float | None = None
    max_text_tokens: int | None = None
    tokenizer: str | None = None


class Limits(BaseModel):
    max_body_bytes: int
    max_part_bytes: int
    max_image_pixels: int
    max_image_frames: int
    max_audio_seconds: float
    max_audio_samples: int = Field(description="Decoded frames x channels of one audio file.")
    max_text_chars: int
    max_decode_seconds: float = Field(description="CPU seconds one audio file may take to decode.")
    max_inflight_bytes: int = Field(
        description="This process's memory budget for requests in flight: bodies as they arrive, inputs while they "
        "are decoded (FUSION_MAX_INFLIGHT_BYTES, or derived from the memory the process may use). Beyond it: 503 "
        "with Retry-After."
    )
    inflight_bytes_reserve: int = Field(description="The part of that budget only decoding may use.")


class RuntimeInfo(BaseModel):
    name: str = Field(description="What runs the forward pass: `torch` (eager PyTorch) or `onnxruntime`.",
                      examples=["onnxruntime"])
    requested: str = Field(description="FUSION_RUNTIME: `auto`, `torch` or `onnxruntime`.")
    onnx_parts: list[str] = Field(description="The parts (encoders, `fusion` head) ONNX Runtime serves; torch the rest.")
    parity: float | None = Field(
        description="Largest difference of any logit from the model as trained, over the inputs checked at load "
        "(every modality subset); null where the model is served as trained.")
    speedup: dict[str, float] = Field(
        description="Eager torch's time over the served runtime's per batch size, as measured at load (`auto`).")
    note: str = Field(description="Why this runtime is served (a fallback says what failed).")


class ModelInfo(BaseModel):
    name: str
    version: str
    description: str
    default: bool
    labels: list[str]
    modalities: list[str]
    encoders: dict[str, str]
    fusion: str
    parameters: int
    device: str
    runtime: RuntimeInfo
    temperature: float = Field(description="Calibration temperature for input subsets without their own.")
    subset_temperatures: dict[str, float] = Field(description="Calibration temperature per input subset.")
    preprocessing: Preprocessing
    limits: Limits
    metrics: dict[str, Any] = Field(description="Evaluation metrics from the model's card (metrics.json).")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: str
    models: list[str] = []
