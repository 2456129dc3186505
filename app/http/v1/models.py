"""GET /v1/models and /v1/models/{name}: what each served model accepts and how it was evaluated."""
from __future__ import annotations

from fastapi import APIRouter, Request

from app.engine.api import ModelDescription
from app.http.state import ServiceState, service
from app.http.v1.predict import ModelName
from app.http.v1.schemas import ErrorBody, Limits, ModelInfo, ModelList, Preprocessing, RuntimeInfo

router = APIRouter(tags=["models"])
NOT_READY = {503: {"model": ErrorBody, "description": "Loading, warming up, or shutting down."}}


@router.get("/v1/models", response_model=ModelList, responses=NOT_READY, summary="List the served models")
async def list_models(request: Request) -> ModelList:
    state = service(request)
    engine = state.engine_or_503()
    assert engine.default_name is not None
    return ModelList(
        default=engine.default_name,
        models=[model_info(m, engine.default_name, state) for m in engine.models.values()],
    )


@router.get(
    "/v1/models/{name}",
    response_model=ModelInfo,
    responses={404: {"model": ErrorBody, "description": "No such model."}, **NOT_READY},
    summary="Describe one model",
)
async def get_model(request: Request, name: ModelName) -> ModelInfo:
    state = service(request)
    engine = state.engine_or_503()
    return model_info(engine.describe(name), engine.default_name, state)


def model_info(model: ModelDescription, default_name: str | None, state: ServiceState) -> ModelInfo:
    spec = model.spec
    settings = state.settings
    encoders: dict[str, str] = {}
    if spec.image:
        encoders["image"] = spec.image.encoder
    if spec.text:
        encoders["text"] = f"{spec.text.encoder} over {spec.text.tokenizer.type} tokens"
    if spec.audio:
        encoders["audio"] = f"log-mel + {spec.audio.encoder}"
    return ModelInfo(
        name=model.name,
        version=spec.version,
        description=spec.description,
        default=model.name == default_name,
        labels=list(spec.labels),
        modalities=list(spec.ordered_modalities),
        encoders=encoders,
        fusion=spec.fusion.type,
        parameters=model.parameter_count,
        device=model.device,
        runtime=RuntimeInfo(
            name=model.runtime.name,
            requested=model.runtime.requested,
            onnx_parts=list(model.runtime.onnx_parts),
            parity=model.runtime.parity,
            speedup={str(size): round(x, 3) for size, x in model.runtime.speedup.items()},
            note=model.runtime.note,
        ),
        temperature=spec.temperature,
        subset_temperatures=spec.subset_temperatures,
        preprocessing=Preprocessing(
            image_size=spec.image.size if spec.image else None,
            image_channels=spec.image.channels if spec.image else None,
            sample_rate=spec.audio.sample_rate if spec.audio else None,
            clip_seconds=spec.audio.clip_seconds if spec.audio else None,
            max_text_tokens=spec.text.max_tokens if spec.text else None,
            tokenizer=spec.text.tokenizer.type if spec.text else None,
        ),
        limits=Limits(
            max_body_bytes=settings.max_body_bytes,
            max_part_bytes=settings.max_part_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_image_frames=settings.max_image_frames,
            max_audio_seconds=settings.max_audio_seconds,
            max_audio_samples=settings.max_audio_samples,
            max_text_chars=settings.max_text_chars,
            max_decode_seconds=settings.max_decode_seconds,
            max_inflight_bytes=state.budget.limit or 0,
            inflight_bytes_reserve=state.budget.reserve,
        ),
        metrics=model.metrics,
    )
