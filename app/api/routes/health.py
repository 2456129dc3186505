"""Liveness and readiness probes."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import ready_registry
from app.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process is up")
async def healthz() -> Health:
    return Health(status="alive")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: models loaded and warmed up",
    responses={503: {"model": Health, "description": "Loading, warming up, or shutting down."}},
)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    registry = ready_registry(state)
    if registry is None:
        status = "shutting_down" if getattr(state, "shutting_down", False) else "loading"
        return JSONResponse(Health(status=status).model_dump(), status_code=503, headers={"Retry-After": "1"})
    return JSONResponse(Health(status="ready", models=list(registry.models)).model_dump())
