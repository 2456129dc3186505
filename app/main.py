"""The FastAPI application: `create_app()` and its lifespan (load models, warm up, run batchers, drain on exit)."""
from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from app import __version__
from app.api.auth import ApiKeyMiddleware
from app.api.errors import install_error_handlers
from app.api.guard import RequestGuardMiddleware
from app.api.middleware import RequestIdMiddleware
from app.api.openapi import install_openapi
from app.api.routes import health, metrics, models, predict, v2
from app.api.routes.docs import ASSETS_PATH, install_docs
from app.api.telemetry import TelemetryMiddleware
from app.config import Settings, get_settings
from app.errors import ArtifactError
from app.metrics import ServiceMetrics
from app.serving import ModelRegistry, configure_torch, make_preprocess_pool

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every artifact (a broken one stops startup with a message naming the file), then warm up in the
    background: /readyz answers 503 until every model has run its warm-up batches."""
    settings: Settings = app.state.settings
    configure_torch(settings)
    registry = ModelRegistry(settings, observer_factory=app.state.metrics.batch_observer)
    try:
        await asyncio.to_thread(registry.load)
    except ArtifactError as exc:
        log.critical("cannot start: %s", exc)
        raise
    for model in registry.models.values():
        app.state.metrics.model_loaded(model.name, model.spec.version, str(model.predictor.device))
    app.state.preprocess_pool = make_preprocess_pool(settings.preprocess_workers)
    warm = asyncio.create_task(_warm_and_start(app, registry), name="warmup")
    try:
        yield
    finally:
        app.state.ready = False
        app.state.shutting_down = True
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        await registry.stop()
        gc.unfreeze()
        if app.state.preprocess_pool is not None:
            app.state.preprocess_pool.shutdown(wait=False, cancel_futures=True)


async def _warm_and_start(app: FastAPI, registry: ModelRegistry) -> None:
    if app.state.settings.warmup:
        await asyncio.to_thread(registry.warmup)
    registry.start()
    app.state.registry = registry
    # What is alive now (torch, the models, the app) lives as long as the process: take it out of the cyclic
    # collector's reach. Otherwise every full collection walks all of it on the event loop (measured: 300 ms
    # pauses, which tripled p99 at concurrency 32).
    gc.collect()
    gc.freeze()
    app.state.ready = True
    log.info("ready: serving %s (default %s)", ", ".join(registry.models), registry.default_name)


def begin_draining(app: FastAPI) -> None:
    """Stop admitting (the server calls this on SIGTERM, before it closes the listener): /readyz and new requests
    answer 503, responses close their connections; requests already admitted run to the end."""
    if not app.state.shutting_down:
        app.state.ready = False
        app.state.shutting_down = True
        log.info("draining: /readyz and new requests answer 503 from now on")


class FusionApp(FastAPI):
    """FastAPI with the request-id middleware outside Starlette's error middleware, so that even the response to
    an unhandled exception carries `X-Request-ID` (and its log lines the request id)."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIdMiddleware(super().build_middleware_stack())


# Reachable without an API key: probes, and the docs page with its schema (its Authorize button takes the key).
PUBLIC_PATHS = ("/healthz", "/readyz", "/docs", "/openapi.json")
PUBLIC_PREFIXES = (ASSETS_PATH + "/",)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. Settings default to the `FUSION_*` environment."""
    app = FusionApp(
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
    _add_middleware(app, app.state.settings)
    for router in (predict.router, models.router, health.router, metrics.router, v2.router):
        app.include_router(router)
    install_docs(app)
    install_openapi(app, bearer=bool(app.state.settings.api_keys), public_paths=PUBLIC_PATHS)
    return app


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """From the inside out (each one added wraps the previous): guard, API keys, CORS, telemetry. The request id
    wraps them all (FusionApp), so telemetry, refusals and errors all see it. CORS is outside the key check so
    that preflights pass and refusals carry CORS headers; the guard is inside it, so that requests without a
    valid key take no upload slot."""
    app.add_middleware(
        RequestGuardMiddleware,
        state=app.state,
        max_inflight=settings.max_inflight_requests,
        body_timeout_s=settings.body_timeout_s,
    )
    if settings.api_keys:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=[k.get_secret_value() for k in settings.api_keys],
            public_paths=PUBLIC_PATHS,
            public_prefixes=PUBLIC_PREFIXES,
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(TelemetryMiddleware, metrics=app.state.metrics)
