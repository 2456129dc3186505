"""Operations endpoints: liveness, readiness and the Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.http.state import service
from app.http.v1.schemas import Health

router = APIRouter()


@router.get("/healthz", response_model=Health, summary="Liveness: the process is up", tags=["health"])
async def healthz() -> Health:
    return Health(status="alive")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: models loaded and warmed up",
    responses={503: {"model": Health, "description": "Loading, warming up, or shutting down."}},
    tags=["health"],
)
async def readyz(request: Request) -> JSONResponse:
    state = service(request)
    engine = state.ready_engine()
    if engine is None:
        status = "shutting_down" if state.shutting_down else "loading"
        return JSONResponse(Health(status=status).model_dump(), status_code=503, headers={"Retry-After": "1"})
    return JSONResponse(Health(status="ready", models=list(engine.models)).model_dump())


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}},
    summary="Prometheus metrics",
    tags=["operations"],
)
async def metrics(request: Request) -> Response:
    body, content_type = service(request).metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
