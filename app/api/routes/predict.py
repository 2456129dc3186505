"""POST /v1/predict and /v1/models/{name}/predict: multipart image/text/audio in, probabilities out."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from app.api.deps import RegistryDep, SettingsDep
from app.api.lean_route import LeanRoute
from app.api.multipart import FormLimits, read_form
from app.api.schemas import ErrorBody, PredictResponse
from app.config import Settings
from app.inputs import DecodeLimits
from app.model.spec import MODALITIES
from app.serving import Prediction, RawInputs, ServedModel

# LeanRoute: the hot path skips FastAPI's general dependency solver (see app.api.lean_route).
router = APIRouter(tags=["predict"], route_class=LeanRoute)
T = TypeVar("T")

_FILE = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Any non-empty subset of the three fields. An empty part counts as not sent.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            **_FILE,
                            "description": "Image file: JPEG, PNG, WebP, GIF (first frame), BMP, TIFF, AVIF, "
                            "HEIC/HEIF or JPEG XL; the type is read from the content.",
                        },
                        "text": {"type": "string", "description": "UTF-8 text."},
                        "audio": {
                            **_FILE,
                            "description": "Audio file: WAV/W64/RF64, FLAC, OGG, MP3, WebM/Matroska, "
                            "MP4/M4A/3GP/MOV, CAF, AIFF, AMR or AAC (Opus, Vorbis, AAC, ALAC, AMR, GSM, PCM, ...), "
                            "or a video file's audio track; any rate and channels; the type is read from the content.",
                        },
                    },
                }
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed multipart body.",
        404: "No such model.",
        413: "A part, the body, the image's pixels, the audio's duration or the text is over its limit.",
        415: "Not multipart/form-data, or a file that is not a supported image/audio.",
        422: "No input, unknown field, corrupt file, or a modality the model does not accept.",
        503: "Queue full (see Retry-After) or not ready.",
        504: "The request waited too long in the queue.",
    }.items()
}
TopK = Annotated[int, Query(ge=1, le=1000, description="How many labels to list in `top`.")]
ModelName = Annotated[str, Path(description="A model name from GET /v1/models.", max_length=64)]


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    openapi_extra=PREDICT_BODY,
    responses=ERRORS,
    summary="Predict with the default model",
)
async def predict_default(
    request: Request, registry: RegistryDep, settings: SettingsDep, top_k: TopK = 5
) -> Response:
    return await _predict(request, registry.get(None), settings, top_k)


@router.post(
    "/v1/models/{name}/predict",
    response_model=PredictResponse,
    openapi_extra=PREDICT_BODY,
    responses=ERRORS,
    summary="Predict with a named model",
)
async def predict_named(
    request: Request, name: ModelName, registry: RegistryDep, settings: SettingsDep, top_k: TopK = 5
) -> Response:
    return await _predict(request, registry.get(name), settings, top_k)


async def _predict(request: Request, model: ServedModel, settings: Settings, top_k: int) -> Response:
    arrived = time.perf_counter()
    # Announced while the upload arrives, so an idle model's next batch may wait for it (app.batching). Queueing
    # the request ends the announcement; the `finally` ends it for a request refused or failed before that.
    announcement = model.batcher.announce()
    try:
        parts = await read_form(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            MODALITIES,
            FormLimits(max_body_bytes=settings.max_body_bytes, max_part_bytes=settings.max_part_bytes),
        )
        raw = RawInputs(**{name: bytes(p.data) for name, p in parts.items() if p.data})
        request.state.modalities = raw.modalities  # for the access log
        pool = request.app.state.preprocess_pool
        work = model.predict(raw, decode_limits(settings), pool, announcement)
        outcome = await unless_client_leaves(request, work)
    finally:
        announcement.withdraw()
    if outcome is None:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    request.state.batch_size = outcome.batch_size
    return _response(model, outcome, top_k, arrived)


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_image_pixels=settings.max_image_pixels,
        max_image_frames=settings.max_image_frames,
        max_audio_seconds=settings.max_audio_seconds,
        max_audio_samples=settings.max_audio_samples,
        max_text_chars=settings.max_text_chars,
    )


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`; if the client disconnects first, cancel it (a queued request is then skipped) and return None."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def cancel_when_client_leaves() -> None:
        nonlocal left
        await _disconnected(request)
        left = True
        task.cancel()

    # One watcher task per request, and `work` runs in this one: the cheapest form on the hot path.
    watcher = asyncio.create_task(cancel_when_client_leaves())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        task.uncancel()
        return None
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _response(model: ServedModel, p: Prediction, top_k: int, arrived: float) -> Response:
    """The PredictResponse document, serialised directly (it is built from trusted values, so FastAPI's
    response-model validation would only cost time)."""
    labels = model.spec.labels
    probs = p.probabilities.tolist()
    order = sorted(range(len(labels)), key=probs.__getitem__, reverse=True)[:top_k]
    body = {
        "model": model.name,
        "version": model.spec.version,
        "probabilities": dict(zip(labels, probs)),
        "top": [{"label": labels[i], "probability": probs[i]} for i in order],
        "modalities": list(p.modalities),
        "timing": {
            "preprocess_ms": round(p.preprocess_ms, 3),
            "queue_ms": round(p.queue_ms, 3),
            "inference_ms": round(p.compute_ms, 3),
            "total_ms": round((time.perf_counter() - arrived) * 1e3, 3),
            "batch_size": p.batch_size,
        },
    }
    return Response(orjson.dumps(body), media_type="application/json")
