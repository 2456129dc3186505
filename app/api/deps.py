"""FastAPI dependencies: the app's settings and model registry, typed for route signatures.

They are `async` so that FastAPI calls them inline instead of hopping to its thread pool for each request.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import State

from app.config import Settings
from app.errors import NotReady
from app.serving import ModelRegistry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def ready_registry(state: State) -> ModelRegistry | None:
    """The registry while the service is ready (loaded, warmed up, not draining), else None: the one definition
    of readiness that /readyz, /v2's ready endpoints and every model route share."""
    registry: ModelRegistry | None = getattr(state, "registry", None)
    return registry if registry is not None and state.ready else None


async def get_registry(request: Request) -> ModelRegistry:
    """The loaded models; 503 until they are loaded and warmed up, and again once the service drains."""
    state = request.app.state
    registry = ready_registry(state)
    if registry is None:
        if getattr(state, "shutting_down", False):
            raise NotReady("the service is shutting down; retry on another replica", headers={"Retry-After": "1"})
        raise NotReady("the model is still loading; retry in a moment", headers={"Retry-After": "1"})
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
