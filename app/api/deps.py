"""FastAPI dependencies: the app's settings and model registry, typed for route signatures.

They are `async` so that FastAPI calls them inline instead of hopping to its thread pool for each request.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.errors import NotReady
from app.serving import ModelRegistry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    """The loaded models; 503 until they are loaded and warmed up."""
    registry: ModelRegistry | None = getattr(request.app.state, "registry", None)
    if registry is None or not request.app.state.ready:
        raise NotReady("the model is still loading; retry in a moment", headers={"Retry-After": "1"})
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
