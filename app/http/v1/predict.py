"""POST /v1/predict and /v1/models/{name}/predict: multipart image/text/audio in, probabilities out."""
from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from app.engine.api import ModelDescription, Prediction
from app.http.clients import CLIENT_LEFT, unless_client_leaves
from app.http.errors import CLIENT_CLOSED
from app.http.multipart import read_form
from app.http.state import service
from app.http.v1.explanation import explanation_body
from app.http.v1.schemas import ErrorBody, PredictResponse
from app.inputs.parts import RawInputs
from app.model.spec import MODALITIES

router = APIRouter(tags=["predict"])

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
Explain = Annotated[
    bool,
    Query(
        description="Also explain the answer (`explanation`): each sent input's Shapley value for the `top` labels, "
        "each input's own answer, agreement and conflict, the fusion's internals. The model runs once more per "
        "other subset of the sent inputs (in the same batch; the encoders only once)."
    ),
]
ModelName = Annotated[str, Path(description="A model name from GET /v1/models.", max_length=64)]


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    openapi_extra=PREDICT_BODY,
    responses=ERRORS,
    summary="Predict with the default model",
)
async def predict_default(request: Request, top_k: TopK = 5, explain: Explain = False) -> Response:
    return await _predict(request, None, top_k, explain)


@router.post(
    "/v1/models/{name}/predict",
    response_model=PredictResponse,
    openapi_extra=PREDICT_BODY,
    responses=ERRORS,
    summary="Predict with a named model",
)
async def predict_named(request: Request, name: ModelName, top_k: TopK = 5, explain: Explain = False) -> Response:
    return await _predict(request, name, top_k, explain)


async def _predict(request: Request, name: str | None, top_k: int, explain: bool) -> Response:
    """A thin adapter: multipart parts -> one sample -> the engine -> the v1 response document."""
    arrived = time.perf_counter()
    state = service(request)
    engine = state.engine_or_503()
    model = engine.describe(name)
    # Announced while the upload arrives, so an idle model's next batch may wait for it (app.engine.batcher).
    # Queueing the request ends the announcement; the `finally` ends it for a request refused before that.
    announcement = engine.announce(name)
    try:
        parts = await read_form(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            MODALITIES,
            state.form_limits,
        )
        # The parts' own buffers, not copies: each upload is held once (its body is on the budget already).
        raw = RawInputs(**{part: p.data for part, p in parts.items() if p.data})
        request.state.modalities = raw.modalities  # for the access log
        outcome = await unless_client_leaves(
            request, engine.predict(name, [raw], announcement, state.budget, explain=explain)
        )
    finally:
        announcement.withdraw()
    if outcome is CLIENT_LEFT:
        return Response(status_code=CLIENT_CLOSED)
    (prediction,) = outcome
    request.state.batch_size = prediction.batch_size
    state.metrics.observe_predictions(model.name, outcome)
    return _response(model, prediction, top_k, arrived)


def _response(model: ModelDescription, p: Prediction, top_k: int, arrived: float) -> Response:
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
    if p.explanation is not None:
        body["explanation"] = explanation_body(labels, model.spec.fusion.type, p.explanation, order)
    return Response(orjson.dumps(body), media_type="application/json")
