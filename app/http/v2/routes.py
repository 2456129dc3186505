"""Open Inference Protocol (KServe v2) over HTTP/REST, so Triton's and KServe's clients and tools work unmodified.

Health, server and model metadata, Triton's model configuration (read by perf_analyzer), and inference through the
same engine call as /v1, with N samples per call. Every error on these paths answers with the protocol's body
`{"error": "..."}` (app.http.errors renders it) and the status /v1 gives the same error.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import JSONResponse

from app import __version__
from app.engine.api import ModelDescription
from app.errors import ModelNotFound, UnsupportedMediaType
from app.http.clients import CLIENT_LEFT, unless_client_leaves
from app.http.errors import CLIENT_CLOSED
from app.http.state import service, upload_hold
from app.http.v1.predict import ModelName
from app.http.v2 import tensors
from app.http.v2.codec import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    ParsedRequest,
    RequestedOutput,
    encode_infer_response,
    parse_infer_request,
    read_body,
)
from app.http.v2.schemas import (
    InferRequest,
    InferResponse,
    ModelConfig,
    ModelMetadata,
    ModelReady,
    OipError,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from app.inputs.parts import RawInputs
from app.model.spec import MODALITIES

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration"]
Version = Annotated[str, Path(description="The model's version (GET /v2/models/{name} lists it).", max_length=64)]

router = APIRouter(tags=["open inference protocol (v2)"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OipError, "description": text}
    for code, text in {
        400: "Malformed request: JSON, shapes, datatypes, binary data sizes, base64.",
        404: "No such model or version.",
        413: "The body, a file, an image's pixels, an audio's duration, a text or the sample count is over its limit.",
        415: "A file that is not a supported image/audio, or a compressed body.",
        422: "No input, unknown input/output, corrupt file, or a modality the model does not accept.",
        503: "Queue full (see Retry-After) or not ready.",
        504: "A sample waited too long in the queue.",
    }.items()
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _ERRORS[404], 503: _ERRORS[503]}


@router.get("/v2", response_model=ServerMetadata, summary="Server metadata")
@router.get("/v2/", response_model=ServerMetadata, include_in_schema=False)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="fusion-serve", version=__version__, extensions=EXTENSIONS)


@router.get("/v2/health/live", response_model=ServerLive, summary="Server live")
async def server_live() -> ServerLive:
    return ServerLive(live=True)


@router.get(
    "/v2/health/ready",
    response_model=ServerReady,
    summary="Server ready: every model loaded and warmed up",
    responses={400: {"model": ServerReady, "description": "Loading, warming up, or shutting down."}},
)
async def server_ready(request: Request) -> JSONResponse:
    ready = service(request).ready_engine() is not None
    return JSONResponse(ServerReady(ready=ready).model_dump(), status_code=200 if ready else 400)


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses=_NOT_FOUND, summary="Model metadata")
async def model_metadata(request: Request, name: ModelName) -> ModelMetadata:
    return tensors.model_metadata(_model(request, name, None))


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=_NOT_FOUND,
    summary="Model metadata (a version)",
)
async def model_version_metadata(request: Request, name: ModelName, version: Version) -> ModelMetadata:
    return tensors.model_metadata(_model(request, name, version))


_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ModelReady, "description": "Not ready yet."},
    404: _ERRORS[404],
}


@router.get("/v2/models/{name}/ready", response_model=ModelReady, responses=_READY_RESPONSES, summary="Model ready")
async def model_ready(request: Request, name: ModelName) -> JSONResponse:
    return _model_ready(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_model=ModelReady,
    responses=_READY_RESPONSES,
    summary="Model ready (a version)",
)
async def model_version_ready(request: Request, name: ModelName, version: Version) -> JSONResponse:
    return _model_ready(request, name, version)


@router.get(
    "/v2/models/{name}/config",
    response_model=ModelConfig,
    responses=_NOT_FOUND,
    summary="Model configuration (Triton's extension; perf_analyzer reads it)",
)
async def model_config(request: Request, name: ModelName) -> ModelConfig:
    return tensors.model_config(_model(request, name, None))


@router.get(
    "/v2/models/{name}/versions/{version}/config",
    response_model=ModelConfig,
    responses=_NOT_FOUND,
    summary="Model configuration (a version)",
)
async def model_version_config(request: Request, name: ModelName, version: Version) -> ModelConfig:
    return tensors.model_config(_model(request, name, version))


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` references inlined (OpenAPI would resolve them against itself)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


_BINARY_BODY = {
    "schema": {"type": "string", "format": "binary"},
    "description": f"The JSON object, then the binary tensor data; the {HEADER_LENGTH} header gives the JSON's length.",
}
_INFER_DOCS: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {
                JSON_CONTENT_TYPE: {"schema": _inline(InferRequest.model_json_schema())},
                BINARY_CONTENT_TYPE: _BINARY_BODY,
            },
        }
    },
    "responses": {
        200: {"model": InferResponse, "content": {BINARY_CONTENT_TYPE: _BINARY_BODY}},
        **_ERRORS,
    },
    "response_class": Response,
}
HeaderLength = Annotated[
    str | None,
    Header(
        alias=HEADER_LENGTH,
        description="Binary tensor data extension: the length of the JSON part; the binary data follow it.",
    ),
]


@router.post("/v2/models/{name}/infer", summary="Inference", **_INFER_DOCS)
async def infer(request: Request, name: ModelName, header_length: HeaderLength = None) -> Response:
    return await _infer(request, name, None, header_length)


@router.post("/v2/models/{name}/versions/{version}/infer", summary="Inference (a version)", **_INFER_DOCS)
async def infer_version(
    request: Request, name: ModelName, version: Version, header_length: HeaderLength = None
) -> Response:
    return await _infer(request, name, version, header_length)


@router.api_route(
    "/v2/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"], include_in_schema=False
)
async def no_such_endpoint(request: Request, path: str) -> Response:
    raise ModelNotFound(
        f"no endpoint {request.method} {request.url.path}; the Open Inference Protocol endpoints are listed at /docs"
    )


async def _infer(request: Request, name: str, version: str | None, header_length: str | None) -> Response:
    """A thin adapter: the OIP body -> N samples -> the engine -> output tensors."""
    state = service(request)
    engine = state.engine_or_503()
    model = tensors.resolve(engine, name, version)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    announcement = engine.announce(name)
    try:
        settings = state.settings
        body = await read_body(request.stream(), request.headers.get("content-length"), settings.max_body_bytes)
        if (hold := upload_hold(request)) is not None:
            # Parsing JSON makes strings of its data and bytes of those (base64 decoded for files): copies, where
            # binary tensor data are used in place.
            hold.take(2 * _json_length(body, header_length))
        parsed, raws, wanted = _parse(body, header_length, model, engine.max_samples(name), settings.max_part_bytes)
        request.state.modalities = tuple(m for m in MODALITIES if any(m in raw.modalities for raw in raws))
        outcome = await unless_client_leaves(
            request, engine.predict(name, raws, announcement, state.budget, explain=parsed.explain)
        )
    finally:
        announcement.withdraw()
    if outcome is CLIENT_LEFT:
        return Response(status_code=CLIENT_CLOSED)
    request.state.batch_size = max(p.batch_size for p in outcome)
    state.metrics.observe_predictions(model.name, outcome)
    output = tensors.output_tensors(model, outcome, wanted)
    content, json_length = encode_infer_response(model.name, model.spec.version, parsed.id, output)
    if json_length is None:
        return Response(content, media_type=JSON_CONTENT_TYPE)
    return Response(content, media_type=BINARY_CONTENT_TYPE, headers={HEADER_LENGTH: str(json_length)})


def _json_length(body: bytearray, header_length: str | None) -> int:
    """The length of the body's JSON part (the binary data extension's header, when it is a valid one)."""
    text = (header_length or "").strip()
    return int(text) if text.isdigit() and int(text) <= len(body) else len(body)


def _parse(
    body: bytearray, header_length: str | None, model: ModelDescription, max_samples: int, max_element_bytes: int
) -> tuple[ParsedRequest, list[RawInputs], tuple[RequestedOutput, ...]]:
    """Parse the body into samples and the outputs wanted."""
    parsed = parse_infer_request(body, header_length, max_elements=max_samples)
    return parsed, tensors.raw_samples(parsed, max_element_bytes), tensors.requested_outputs(parsed, model)


def _model(request: Request, name: str, version: str | None) -> ModelDescription:
    return tensors.resolve(service(request).engine_or_503(), name, version)


def _model_ready(request: Request, name: str, version: str | None) -> JSONResponse:
    engine = service(request).ready_engine()
    if engine is None:
        return JSONResponse(ModelReady(name=name, ready=False).model_dump(), status_code=400)
    tensors.resolve(engine, name, version)
    return JSONResponse(ModelReady(name=name, ready=True).model_dump())
