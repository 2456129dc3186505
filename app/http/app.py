"""The FastAPI application: `create_app()` and its lifespan (load models, warm up, start batching, drain on exit)."""
from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from app import __version__, memory
from app.config import Settings, get_settings
from app.engine.api import Engine
from app.http import docs, ops, playground
from app.http.errors import install_error_handlers
from app.http.middleware.auth import ApiKeyMiddleware
from app.http.middleware.request_id import RequestIdMiddleware
from app.http.middleware.telemetry import TelemetryMiddleware
from app.http.middleware.upload_guard import UploadGuardMiddleware
from app.http.openapi import install_openapi
from app.http.peers import Peers
from app.http.state import ServiceState
from app.http.v1 import models, predict
from app.http.v2 import routes as v2
from app.inputs.budget import mib
from app.metrics import ServiceMetrics
from app.model.errors import ArtifactError

log = logging.getLogger(__name__)
EngineFactory = Callable[[Settings, ServiceMetrics], Engine]


def torch_engine(settings: Settings, metrics: ServiceMetrics) -> Engine:
    """The engine `fusion-serve serve` runs: the models on this process's device (imported here, so that the
    HTTP layer itself never loads torch)."""
    from app.engine.config import EngineConfig
    from app.engine.engine import TorchEngine

    return TorchEngine(EngineConfig.from_settings(settings), observer=metrics.batch_observer)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every artifact (a broken one stops startup with a message naming the file), then warm up in the
    background: /readyz answers 503 until every model has run its warm-up batches."""
    state: ServiceState = app.state.service
    try:
        await asyncio.to_thread(state.engine.load)
    except ArtifactError as exc:
        log.critical("cannot start: %s", exc)
        raise
    for description in state.engine.models.values():
        state.metrics.model_loaded(
            description.name, description.spec.version, description.device, description.spec.ordered_modalities
        )
    warm = state.warming = asyncio.create_task(_warm_and_start(state), name="warmup")
    try:
        yield
    finally:
        state.set_ready(False)
        state.draining = True
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        await state.engine.stop()
        gc.unfreeze()


async def _warm_and_start(state: ServiceState) -> None:
    await asyncio.to_thread(state.engine.warmup)
    configure_budget(state)
    state.engine.start()
    # What is alive now (torch, the models, the app) lives as long as the process: take it out of the cyclic
    # collector's reach. Otherwise every full collection walks all of it on the event loop (bench/README.md).
    gc.collect()
    gc.freeze()
    state.set_ready(True)
    log.info("ready: serving %s (default %s)", ", ".join(state.engine.models), state.engine.default_name)


def configure_budget(state: ServiceState) -> None:
    """Set this process's memory budget for requests in flight and its reserve for decoding (the engine's, at most
    half). FUSION_MAX_INFLIGHT_BYTES is the whole service's: each worker gets an equal share. Else it is derived
    from the memory the service may use, less every process's size once loaded and warmed up (this one's peak, as
    the estimate) and a margin, shared by the workers."""
    settings = state.settings
    if settings.max_inflight_bytes is not None:
        limit = memory.host_share(int(settings.max_inflight_bytes), state.workers)
        how = "FUSION_MAX_INFLIGHT_BYTES" + (f" / {state.workers} workers" if state.workers > 1 else "")
    else:
        available = memory.memory_limit()
        baseline = memory.resident_bytes(peak=True)
        spare = memory.default_budget(available.bytes, baseline, state.processes) * state.processes
        limit = max(memory.MIN_BUDGET, spare // state.workers)
        share = f", shared by {state.workers} workers of {state.processes} processes" if state.processes > 1 else ""
        how = (f"{available.source} {mib(available.bytes)} - peak RSS once loaded {mib(baseline)} - margin "
               f"{mib(memory.margin(available.bytes))}{share}; set FUSION_MAX_INFLIGHT_BYTES to choose")
    state.budget.configure(limit, min(state.engine.decode_reserve, limit // 2))
    log.info("memory budget for requests in flight: %s (%s); %s of it kept for decoding", mib(limit), how,
             mib(state.budget.reserve))
    uploads = state.budget.for_uploads or 0
    if uploads < settings.max_body_bytes:
        log.warning("the memory budget leaves %s for uploads, less than FUSION_MAX_BODY_BYTES (%s): larger bodies "
                    "are refused with 413", mib(uploads), mib(settings.max_body_bytes))


def begin_draining(app: FastAPI) -> None:
    """Stop admitting (the server calls this on SIGTERM, before it closes the listener): /readyz and new requests
    answer 503, responses close their connections; requests already admitted run to the end."""
    state: ServiceState = app.state.service
    if not state.draining:
        state.draining = True
        log.info("draining: /readyz and new requests answer 503 from now on")


class FusionApp(FastAPI):
    """FastAPI with the request-id middleware outside Starlette's error middleware, so that even the response to
    an unhandled exception carries `X-Request-ID` (and its log lines the request id)."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIdMiddleware(super().build_middleware_stack())


# Reachable without an API key: probes, the docs page with its schema (its Authorize button takes the key), and the
# playground page (its key field does).
PUBLIC_PATHS = ("/healthz", "/readyz", "/docs", "/openapi.json", "/", playground.PAGE_PATH)
PUBLIC_PREFIXES = (docs.ASSETS_PATH + "/", playground.ASSETS_PATH + "/")


def create_app(
    settings: Settings | None = None,
    engine: EngineFactory = torch_engine,
    peers: Peers | None = None,
    index: int = 0,
    workers: int = 1,
    processes: int = 1,
) -> FastAPI:
    """Build the service. Settings default to the `FUSION_*` environment; `engine` makes the engine (a test may
    pass a fake one, a front-end process a remote one); `peers`/`index`: the readiness shared by the processes of
    a multi-process service, and which of them this is; `workers`/`processes`: how many workers and processes in
    all it has (they size the memory budget)."""
    settings = settings or get_settings()
    app = FusionApp(
        title="fusion-serve",
        version=__version__,
        description=(
            "Multimodal fusion classifier inference. POST any subset of `image` (file), `text` (field) and "
            "`audio` (file) as multipart/form-data to `/v1/predict`; get calibrated class probabilities. "
            "Concurrent requests are batched dynamically."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by docs.install, with local assets
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    metrics = ServiceMetrics(settings.max_batch_size)
    app.state.service = ServiceState(
        settings=settings, engine=engine(settings, metrics), metrics=metrics, peers=peers, index=index,
        workers=workers, processes=processes,
    )
    metrics.watch_budget(app.state.service.budget)
    install_error_handlers(app)
    _add_middleware(app, app.state.service)
    for router in (predict.router, models.router, ops.router, v2.router):
        app.include_router(router)
    docs.install(app)
    playground.install(app)
    install_openapi(app, bearer=bool(settings.api_keys), public_paths=PUBLIC_PATHS)
    return app


def _add_middleware(app: FastAPI, state: ServiceState) -> None:
    """From the inside out (each one added wraps the previous): upload guard, API keys, CORS, telemetry. The
    request id wraps them all (FusionApp), so telemetry, refusals and errors all see it. CORS is outside the key
    check so that preflights pass and refusals carry CORS headers; the guard is inside it, so that requests
    without a valid key take no upload slot."""
    settings = state.settings
    app.add_middleware(UploadGuardMiddleware, state=state)
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
    app.add_middleware(TelemetryMiddleware, metrics=state.metrics)
