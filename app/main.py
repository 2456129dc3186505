"""The FastAPI application: `create_app()` and its lifespan (load models, warm up, run batchers, drain on exit)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.errors import install_error_handlers
from app.api.middleware import RequestIdMiddleware
from app.api.routes import health, metrics, models, predict, v2
from app.api.routes.docs import install_docs
from app.api.telemetry import TelemetryMiddleware
from app.config import Settings, get_settings
from app.metrics import ServiceMetrics
from app.serving import ModelRegistry, configure_torch

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every artifact (a broken one stops startup with a message naming the file), then warm up in the
    background: /readyz answers 503 until every model has run every batch size once."""
    settings: Settings = app.state.settings
    configure_torch(settings)
    registry = ModelRegistry(settings, observer_factory=app.state.metrics.batch_observer)
    await asyncio.to_thread(registry.load)
    for model in registry.models.values():
        app.state.metrics.model_loaded(model.name, model.spec.version, str(model.predictor.device))
    app.state.preprocess_pool = ThreadPoolExecutor(settings.preprocess_workers, thread_name_prefix="preprocess")
    warm = asyncio.create_task(_warm_and_start(app, registry), name="warmup")
    try:
        yield
    finally:
        app.state.ready = False
        app.state.shutting_down = True
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        await registry.stop()
        app.state.preprocess_pool.shutdown(wait=False, cancel_futures=True)


async def _warm_and_start(app: FastAPI, registry: ModelRegistry) -> None:
    if app.state.settings.warmup:
        await asyncio.to_thread(registry.warmup)
    registry.start()
    app.state.registry = registry
    app.state.ready = True
    log.info("ready: serving %s (default %s)", ", ".join(registry.models), registry.default_name)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Settings default to the `FUSION_*` environment."""
    app = FastAPI(
        title="fusion-serve",
        version=__version__,
        description=(
            "Multimodal fusion classifier inference. POST any subset of `image` (file), `text` (field) and "
            "`audio` (file) as multipart/form-data to `/v1/predict`; get calibrated class probabilities. "
            "Concurrent requests are batched dynamically."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, with local assets
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings or get_settings()
    app.state.metrics = ServiceMetrics(app.state.settings.max_batch_size)
    app.state.ready = False
    app.state.shutting_down = False
    app.state.registry = None
    install_error_handlers(app)
    app.add_middleware(TelemetryMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestIdMiddleware)  # added last, so outermost: telemetry sees the request id
    for router in (predict.router, models.router, health.router, metrics.router, v2.router):
        app.include_router(router)
    install_docs(app)
    return app
