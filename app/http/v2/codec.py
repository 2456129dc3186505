"""Open Inference Protocol (KServe v2) REST bodies: read an inference request (a JSON object, optionally followed by
binary tensor data) and write an inference response the same way.

Only what these models need is accepted: every input is a BYTES tensor. Binary tensor data follows Triton's
extension: the `Inference-Header-Content-Length` header gives the JSON's length, each binary input says its size in
`parameters.binary_data_size`, the data follow the JSON in input order, and a BYTES element is a 4-byte
little-endian length followed by its bytes. Knows tensors and bytes; nothing about models or routing.
"""
from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import ValidationError

from app.errors import MalformedRequest, PayloadTooLarge
from app.http.v2.schemas import InferRequest
from app.inputs.parts import Buffer

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"
_LENGTH = struct.Struct("<I")
_END = object()


@dataclass(frozen=True, slots=True)
class BytesInput:
    """One BYTES input tensor of a request, flattened in row-major order."""

    name: str
    shape: tuple[int, ...]
    elements: tuple[Buffer, ...]
    binary: bool  # True: views into the body's binary section; False: UTF-8 of the JSON strings


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int  # 0: the tensor itself; k > 0: its top-k classes as strings (classification extension)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    id: str | None
    inputs: tuple[BytesInput, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output, in `binary_output` form
    binary_output: bool
    explain: bool = False  # the request parameter `explain`


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """A response tensor: FP32 or BOOL values in an array, or BYTES values as strings."""

    name: str
    datatype: Literal["FP32", "BOOL", "BYTES"]
    shape: tuple[int, ...]
    values: np.ndarray | Sequence[str]
    binary: bool


async def read_body(stream: AsyncIterator[bytes], content_length: str | None, max_bytes: int) -> bytearray:
    """The whole request body, refused (413) as soon as it passes `max_bytes`, with or without Content-Length.
    Kept as the one copy of it: binary tensor data are parsed into views of it."""
    too_large = f"the body is larger than the limit of {max_bytes:,} bytes"
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise PayloadTooLarge(too_large)
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(too_large)
    return body


def parse_infer_request(body: bytearray | bytes, header_length: str | None, max_elements: int) -> ParsedRequest:
    """Parse and check an inference request body. Raises MalformedRequest (400) naming what is wrong, or
    PayloadTooLarge (413) for a tensor of more than `max_elements` elements."""
    json_part, binary = _split(body, header_length)
    try:
        request = InferRequest.model_validate_json(json_part)
    except ValidationError as exc:
        raise MalformedRequest(f"the inference request is not valid: {_describe(exc)}") from None
    inputs, offset = [], 0
    for item in request.inputs:
        size = _int_param(item.parameters, "binary_data_size", f"input '{item.name}'")
        if item.datatype != "BYTES":
            raise MalformedRequest(f"input '{item.name}' has datatype {item.datatype}; every input here is BYTES")
        if any(d < 0 for d in item.shape):
            raise MalformedRequest(f"input '{item.name}' has a negative dimension in its shape {item.shape}")
        count = math.prod(item.shape)
        if count > max_elements:
            raise PayloadTooLarge(
                f"input '{item.name}' has {count} elements; at most {max_elements} are accepted per request"
            )
        if size is None:
            if item.data is None:
                raise MalformedRequest(f"input '{item.name}' has neither 'data' nor parameters.binary_data_size")
            elements = _json_elements(item.name, item.data)
        else:
            if item.data is not None:
                raise MalformedRequest(f"input '{item.name}' has both 'data' and parameters.binary_data_size")
            if offset + size > len(binary):
                raise MalformedRequest(
                    f"input '{item.name}' declares {size} bytes of binary data but only {len(binary) - offset} "
                    f"remain after the JSON (check {HEADER_LENGTH} and binary_data_size)"
                )
            elements = _unpack_bytes(item.name, binary[offset : offset + size], count)
            offset += size
        if len(elements) != count:
            raise MalformedRequest(
                f"input '{item.name}' has shape {item.shape} ({count} elements) but {len(elements)} elements"
            )
        inputs.append(BytesInput(item.name, tuple(item.shape), tuple(elements), binary=size is not None))
    if offset != len(binary):
        raise MalformedRequest(
            f"{len(binary) - offset} bytes follow the JSON that no input's binary_data_size accounts for"
        )
    binary_output = _bool_param(request.parameters, "binary_data_output", "the request", False)
    outputs = None
    if request.outputs is not None:
        outputs = tuple(
            RequestedOutput(
                name=o.name,
                binary=_bool_param(o.parameters, "binary_data", f"output '{o.name}'", binary_output),
                classification=_int_param(o.parameters, "classification", f"output '{o.name}'") or 0,
            )
            for o in request.outputs
        )
    explain = _bool_param(request.parameters, "explain", "the request", False)
    return ParsedRequest(request.id, tuple(inputs), outputs, binary_output, explain)


def encode_infer_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body and, when any output travels as binary data, the length of its JSON part."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.binary:
            data = _pack(out)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        elif out.datatype == "FP32":
            entry["data"] = np.asarray(out.values, dtype=np.float32).ravel().tolist()
        elif out.datatype == "BOOL":
            entry["data"] = np.asarray(out.values, dtype=bool).ravel().tolist()
        else:
            entry["data"] = list(out.values)
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = entries
    header = orjson.dumps(response)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _split(body: bytearray | bytes, header_length: str | None) -> tuple[bytearray | bytes, memoryview]:
    """The JSON part and a view of the binary data after it."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not text.isdigit() or not 0 < int(text) <= len(body):
        raise MalformedRequest(
            f"{HEADER_LENGTH} must be the JSON part's length in bytes, between 1 and the body's {len(body)}; "
            f"got {header_length!r}"
        )
    n = int(text)
    view = memoryview(body)
    return bytes(view[:n]), view[n:]


def _describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors(include_url=False):
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts[:5])


def _int_param(params: dict[str, Any] | None, key: str, where: str) -> int | None:
    """An optional non-negative integer parameter (true/false is not one)."""
    value = (params or {}).get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedRequest(f"parameter '{key}' of {where} must be a non-negative integer; got {value!r}")
    return value


def _bool_param(params: dict[str, Any] | None, key: str, where: str, default: bool) -> bool:
    value = (params or {}).get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise MalformedRequest(f"parameter '{key}' of {where} must be true or false; got {value!r}")
    return value


def _json_elements(name: str, data: list[Any]) -> list[bytes]:
    """Flatten (possibly nested) JSON data; every BYTES element must be a string."""
    out: list[bytes] = []
    stack: list[Any] = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        elif isinstance(item, str):
            out.append(item.encode("utf-8", "surrogatepass"))
        else:
            raise MalformedRequest(f"input '{name}' holds {type(item).__name__} data; BYTES elements are strings")
    return out



def _unpack_bytes(name: str, data: memoryview, count: int) -> list[Buffer]:
    """Binary BYTES tensor data: each element is a 4-byte little-endian length, then that many bytes (a view)."""
    out: list[Buffer] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(out) == count:
            raise MalformedRequest(f"input '{name}' has more binary elements than its shape's {count}")
        if end - pos < _LENGTH.size:
            raise MalformedRequest(f"input '{name}': the binary data ends inside an element's 4-byte length")
        (size,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        if size > end - pos:
            raise MalformedRequest(
                f"input '{name}': element {len(out)} declares {size} bytes but only {end - pos} remain"
            )
        out.append(data[pos : pos + size])
        pos += size
    return out


def _pack(out: OutputTensor) -> bytes:
    if out.datatype == "FP32":
        return np.ascontiguousarray(out.values, dtype="<f4").tobytes()
    if out.datatype == "BOOL":  # one byte per element, as Triton's clients read it
        return np.ascontiguousarray(out.values, dtype=bool).tobytes()
    encoded = [s.encode("utf-8") for s in out.values]  # type: ignore[union-attr]
    return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
