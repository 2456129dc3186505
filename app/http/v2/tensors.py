"""A fusion model as the Open Inference Protocol sees it: its metadata, one RawInputs per sample of a request, and
the response tensors of its predictions.

Inputs `image`, `text` and `audio` are BYTES tensors of shape [N], one element per sample; an input that is left
out, or an empty element, means that sample lacks the modality. In JSON `data`, `text` elements are the text itself
and `image`/`audio` elements are the file in base64 (a JSON string cannot carry arbitrary bytes); as binary tensor
data every element is the raw bytes. Outputs: `probabilities` (FP32 [N, classes], in label order; with the
classification extension, BYTES [N, k] strings "probability:index:label") and `labels` (BYTES [classes]).

With the request parameter `explain: true` (app.engine.explain), also, M being the model's modalities:
- `modalities` BYTES [M]: the order of every modality axis below (image, text, audio; those the model has).
- `attributions` FP32 [N, M, classes]: each sent modality's exact Shapley value for each label (0 for a modality
  the sample did not send); a sample's values for a label sum to its probability minus 1/classes.
- `modality_probabilities` FP32 [N, M, classes]: the calibrated probabilities from each modality alone (a row of
  zeros for a modality the sample did not send).
- `agreement` BOOL [N]: every sent modality alone has the same top label. `conflict` BOOL [N]: a modality alone
  gives another label than the answer a probability of 0.8 or more.
- The fusion's internals, named by its type (0 for modalities not sent): `fusion_weights` FP32 [N, M]
  (weighted_sum: the per-modality weights renormalised over the sent ones), `fusion_gates` FP32 [N, M] (gated: the
  gate values), `fusion_attention` FP32 [N, layers, M] (attention: the [CLS] token's attention to each modality
  token per layer, mean over heads). concat, product and late have none.
They are returned by default with `explain`; listed in `outputs`, they need it. The model's metadata does not list
them (clients that request every listed output would otherwise have to explain).
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
MODALITY_AXIS = "modalities"
ATTRIBUTIONS = "attributions"
MODALITY_PROBABILITIES = "modality_probabilities"
AGREEMENT = "agreement"
CONFLICT = "conflict"
EXPLAIN_OUTPUTS = (MODALITY_AXIS, ATTRIBUTIONS, MODALITY_PROBABILITIES, AGREEMENT, CONFLICT)
# The fusion's internals (app.model.fusion), by the name the model gives them.
FUSION_OUTPUTS = {"weighted_sum": "weights", "gated": "gates", "attention": "attention"}
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


def explain_outputs(model: ModelDescription) -> tuple[str, ...]:
    """The outputs an explained request may have from this model."""
    internal = FUSION_OUTPUTS.get(model.spec.fusion.type)
    return EXPLAIN_OUTPUTS + ((f"fusion_{internal}",) if internal else ())


def requested_outputs(request: ParsedRequest, model: ModelDescription) -> tuple[RequestedOutput, ...]:
    """The outputs to return (all by default; with `explain`, its outputs too), checked before anything runs."""
    explained = explain_outputs(model)
    if request.outputs is None:
        names = OUTPUTS + (explained if request.explain else ())
        return tuple(RequestedOutput(name, request.binary_output, 0) for name in names)
    seen: set[str] = set()
    classes = len(model.spec.labels)
    resolved = []
    for out in request.outputs:
        if out.name in explained and not request.explain:
            raise UnknownField(f"output '{out.name}' is an explanation: send the request parameter explain: true")
        if out.name not in OUTPUTS + explained:
            raise UnknownField(
                f"unknown output '{out.name}'; the outputs are {', '.join(OUTPUTS)}, and with the request parameter "
                f"explain: true, {', '.join(explained)}"
            )
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
        elif out.name == PROBABILITIES and out.classification:
            k = out.classification
            top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            strings = [f"{row[i]!s}:{i}:{labels[i]}" for row, idx in zip(probs, top) for i in idx]
            tensors.append(OutputTensor(PROBABILITIES, "BYTES", (len(predictions), k), strings, out.binary))
        elif out.name == PROBABILITIES:
            tensors.append(OutputTensor(PROBABILITIES, "FP32", probs.shape, probs, out.binary))
        else:
            tensors.append(_explanation_tensor(model, predictions, out))
    return tensors


def _explanation_tensor(
    model: ModelDescription, predictions: Sequence[Prediction], out: RequestedOutput
) -> OutputTensor:
    axis = model.spec.ordered_modalities
    if out.name == MODALITY_AXIS:
        return OutputTensor(out.name, "BYTES", (len(axis),), list(axis), out.binary)
    explanations = [p.explanation for p in predictions]
    assert all(e is not None for e in explanations), "explanation outputs are only requested with explain"
    if out.name in (AGREEMENT, CONFLICT):
        flags = np.array([e.agreement if out.name == AGREEMENT else e.conflict for e in explanations], dtype=bool)
        return OutputTensor(out.name, "BOOL", flags.shape, flags, out.binary)
    rows = []
    for e in explanations:
        if out.name == ATTRIBUTIONS:
            per_sent = e.attributions
        elif out.name == MODALITY_PROBABILITIES:
            per_sent = np.stack([e.subsets[m] for m in e.modalities])
        else:  # fusion_<internal>: last axis over the sent modalities
            per_sent = np.moveaxis(e.fusion[out.name.removeprefix("fusion_")], -1, 0)
        full = np.zeros((len(axis), *per_sent.shape[1:]), dtype=np.float32)
        full[[axis.index(m) for m in e.modalities]] = per_sent
        rows.append(np.moveaxis(full, 0, -1) if out.name.startswith("fusion_") else full)
    values = np.stack(rows)
    return OutputTensor(out.name, "FP32", values.shape, values, out.binary)


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
