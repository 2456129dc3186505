"""Open Inference Protocol (KServe v2) JSON bodies as pydantic models: the inference request header is parsed with
them, and every /v2 endpoint's documentation in /docs comes from them."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    """Fields other implementations add (Triton's requests carry `model_name`, say) are ignored, not refused."""

    model_config = ConfigDict(extra="ignore")


class OipError(BaseModel):
    error: str = Field(description="What went wrong and what to change.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions this server implements.")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="`BYTES`, `FP32`, ...")
    shape: list[int] = Field(description="-1 marks a variable-size dimension.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(_Lenient):
    name: str
    shape: list[int] = Field(description="[N]: one element per sample of the request.")
    datatype: str = Field(description="`BYTES` for every input of these models.")
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size`: the tensor's bytes follow the JSON (binary tensor data extension)."
    )
    data: list[Any] | None = Field(
        None,
        description="Row-major elements: strings. `text` as UTF-8 text; `image` and `audio` as base64 of the file. "
        "An empty string means that sample lacks the modality.",
    )


class RequestOutput(_Lenient):
    name: str
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data` (bool); `classification` (int, on `probabilities`: top-k strings)."
    )


class InferRequest(_Lenient):
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(
        None,
        description="`binary_data_output` (bool); `explain` (bool): also return the explanation outputs "
        "(`modalities`, `attributions`, `modality_probabilities`, `agreement`, `conflict`, and the fusion's "
        "`fusion_weights`, `fusion_gates` or `fusion_attention` where its type has them).",
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="Default: every output.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size` when the data follows the JSON.")
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ModelConfigTensor(BaseModel):
    name: str
    data_type: str = Field(description="Triton's name for the type: `TYPE_STRING`, `TYPE_FP32`.")
    dims: list[int]
    optional: bool = False


class ModelConfig(BaseModel):
    """The part of Triton's model configuration that its tools (perf_analyzer, model_analyzer) read."""

    name: str
    platform: str
    backend: str
    max_batch_size: int = Field(description="0: the batch dimension is part of each tensor's shape.")
    input: list[ModelConfigTensor]
    output: list[ModelConfigTensor]
