"""A fusion model as the Open Inference Protocol sees it: its metadata, one RawInputs per sample of a request, and
the response tensors of its predictions.

Inputs `image`, `text` and `audio` are BYTES tensors of shape [N], one element per sample; an input that is left
out, or an empty element, means that sample lacks the modality. In JSON `data`, `text` elements are the text itself
and `image`/`audio` elements are the file in base64 (a JSON string cannot carry arbitrary bytes); as binary tensor
data every element is the raw bytes. Outputs: `probabilities` (FP32 [N, classes], in label order; with the
classification extension, BYTES [N, k] strings "probability:index:label") and `labels` (BYTES [classes]).
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np

from app.engine.api import Engine, ModelDescription, Prediction
from app.errors import (
    MalformedRequest,
    MissingInput,
    ModelNotFound,
    PayloadTooLarge,
    UnknownField,
)
from app.http.v2.codec import OutputTensor, ParsedRequest, RequestedOutput
from app.http.v2.schemas import (
    ModelConfig,
    ModelConfigTensor,
    ModelMetadata,
    TensorMetadata,
)
from app.inputs.parts import Buffer, RawInputs
from app.model.spec import MODALITIES

PROBABILITIES = "probabilities"
LABELS = "labels"
OUTPUTS = (PROBABILITIES, LABELS)
PLATFORM = "pytorch"
_BASE64_IN_JSON = frozenset({"image", "audio"})


def resolve(engine: Engine, name: str, version: str | None) -> ModelDescription:
    """The named model; with a version, only if it is the version served (ModelNotFound otherwise)."""
    model = engine.describe(name)
    if version is not None and version != model.spec.version:
        raise ModelNotFound(f"model '{name}' has no version '{version}'; it serves version '{model.spec.version}'")
    return model


def model_metadata(model: ModelDescription) -> ModelMetadata:
    return ModelMetadata(
        name=model.name,
        versions=[model.spec.version],
        platform=PLATFORM,
        inputs=[TensorMetadata(name=m, datatype="BYTES", shape=[-1]) for m in model.spec.ordered_modalities],
        outputs=[
            TensorMetadata(name=PROBABILITIES, datatype="FP32", shape=[-1, len(model.spec.labels)]),
            TensorMetadata(name=LABELS, datatype="BYTES", shape=[len(model.spec.labels)]),
        ],
    )


def model_config(model: ModelDescription) -> ModelConfig:
    """Triton's model configuration for the same tensors (max_batch_size 0: the batch is in each shape)."""
    classes = len(model.spec.labels)
    return ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend="fusion-serve",
        max_batch_size=0,
        input=[
            ModelConfigTensor(name=m, data_type="TYPE_STRING", dims=[-1], optional=True)
            for m in model.spec.ordered_modalities
        ],
        output=[
            ModelConfigTensor(name=PROBABILITIES, data_type="TYPE_FP32", dims=[-1, classes]),
            ModelConfigTensor(name=LABELS, data_type="TYPE_STRING", dims=[classes]),
        ],
    )


def raw_samples(request: ParsedRequest, max_element_bytes: int) -> list[RawInputs]:
    """One RawInputs per sample. Checks names and shapes; which modalities a model accepts is checked later."""
    if not request.inputs:
        raise MissingInput(f"the request has no inputs; send any of {', '.join(MODALITIES)} as BYTES of shape [N]")
    columns: dict[str, list[Buffer | None]] = {}
    count: int | None = None
    for tensor in request.inputs:
        if tensor.name not in MODALITIES:
            raise UnknownField(f"unknown input '{tensor.name}'; the inputs are {', '.join(MODALITIES)}")
        if tensor.name in columns:
            raise MalformedRequest(f"input '{tensor.name}' is given more than once; send each input once")
        if len(tensor.shape) != 1:
            raise MalformedRequest(
                f"input '{tensor.name}' has shape {list(tensor.shape)}; inputs have shape [N], one element per sample"
            )
        if count is not None and tensor.shape[0] != count:
            raise MalformedRequest(
                f"the inputs disagree on the number of samples ({count} and {tensor.shape[0]} for '{tensor.name}'); "
                "give every input one element per sample, an empty one where a sample lacks it"
            )
        count = tensor.shape[0]
        decode = tensor.name in _BASE64_IN_JSON and not tensor.binary
        columns[tensor.name] = [
            _element(tensor.name, i, e, decode, max_element_bytes) for i, e in enumerate(tensor.elements)
        ]
    return [
        RawInputs(**{name: column[i] for name, column in columns.items() if column[i] is not None})
        for i in range(count or 0)
    ]


def requested_outputs(request: ParsedRequest, model: ModelDescription) -> tuple[RequestedOutput, ...]:
    """The outputs to return (all by default), checked before anything runs."""
    if request.outputs is None:
        return tuple(RequestedOutput(name, request.binary_output, 0) for name in OUTPUTS)
    seen: set[str] = set()
    classes = len(model.spec.labels)
    resolved = []
    for out in request.outputs:
        if out.name not in OUTPUTS:
            raise UnknownField(f"unknown output '{out.name}'; the outputs are {', '.join(OUTPUTS)}")
        if out.name in seen:
            raise MalformedRequest(f"output '{out.name}' is requested more than once")
        if out.classification and out.name != PROBABILITIES:
            raise MalformedRequest(f"the classification parameter applies to '{PROBABILITIES}' only")
        seen.add(out.name)
        resolved.append(RequestedOutput(out.name, out.binary, min(out.classification, classes)))
    return tuple(resolved)


def output_tensors(
    model: ModelDescription, predictions: Sequence[Prediction], wanted: Sequence[RequestedOutput]
) -> list[OutputTensor]:
    labels = model.spec.labels
    probs = np.stack([p.probabilities for p in predictions]).astype(np.float32, copy=False)
    tensors = []
    for out in wanted:
        if out.name == LABELS:
            tensors.append(OutputTensor(LABELS, "BYTES", (len(labels),), list(labels), out.binary))
        elif out.classification:
            k = out.classification
            top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            strings = [f"{row[i]!s}:{i}:{labels[i]}" for row, idx in zip(probs, top) for i in idx]
            tensors.append(OutputTensor(PROBABILITIES, "BYTES", (len(predictions), k), strings, out.binary))
        else:
            tensors.append(OutputTensor(PROBABILITIES, "FP32", probs.shape, probs, out.binary))
    return tensors


def _element(name: str, index: int, data: Buffer, from_base64: bool, limit: int) -> Buffer | None:
    if not data:
        return None
    if from_base64:
        try:
            data = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise MalformedRequest(
                f"input '{name}' element {index} is not base64; in JSON data, {name} files are base64-encoded "
                "(or send them as binary tensor data)"
            ) from None
    if len(data) > limit:
        raise PayloadTooLarge(
            f"input '{name}' element {index} is larger than the limit of {limit:,} bytes per file (or text)"
        )
    return data
