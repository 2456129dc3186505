"""fusion-serve on Ray Serve: Ray is the process manager and the router; each replica runs the service's own FastAPI
app (`create_app`, its lifespan, its middleware, /v1 and /v2) with its own in-process engine, batcher included.

`serve run deploy/ray/serve-cpu.yaml` or `serve deploy deploy/ray/serve.yaml` (import path `app.ray_serve:build`).
Settings come from the `FUSION_*` variables of the application's `runtime_env`, read by the builder (deployment
options) and by each replica (the service). A replica:
- is one model copy on its device: `ray_actor_options.num_gpus` (1 by default when `FUSION_DEVICE=cuda`) makes Ray
  give it a GPU, and its torch threads and decode pool are sized for the CPUs Ray gave it (`num_cpus`);
- loads and warms up in its lifespan before Ray routes to it (the first health check waits for the warm-up);
- answers Ray's health checks with the service's readiness, so Ray replaces a replica that cannot serve;
- drains on shutdown: Ray stops routing to it and waits for its requests (`graceful_shutdown_timeout_s`, sized
  like the service's own drain), then the lifespan stops the engine.
With the shipped configs, Ray's autoscaler adds and removes replicas on the requests in flight at each
(`autoscaling_config.target_ongoing_requests`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.deployment import Application

from app.config import Settings
from app.http.app import EngineFactory, create_app, torch_engine
from app.http.plan import Plan
from app.http.state import ServiceState
from app.logs import JsonFormatter, RequestIdFilter

log = logging.getLogger(__name__)
DEPLOYMENT = "fusion-serve"


def deployment_options(settings: Settings) -> dict[str, Any]:
    """The deployment's defaults for `settings`; the serve config's `deployments:` entry overrides any of them and
    sets the replica count (`autoscaling_config`, or `num_replicas`: none here, so that either works there).
    At most `2 x max_batch_size` requests in a replica at once (one batch computing, the next one forming);
    beyond that Ray's router holds up to `max_queue_size` more per proxy, then answers 503."""
    return {
        "name": DEPLOYMENT,
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 1 if settings.device == "cuda" else 0},
        "max_ongoing_requests": 2 * settings.max_batch_size,
        "max_queued_requests": settings.max_queue_size,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        # As under uvicorn: admitted requests start within request_timeout_s (or get 504), plus time to finish.
        "graceful_shutdown_timeout_s": settings.request_timeout_s + 5,
        "graceful_shutdown_wait_loop_s": 1,
    }


def replica_settings(settings: Settings, cpus: int) -> Settings:
    """A replica's settings: one process with its own models, threads sized for the `cpus` Ray gave it."""
    single = settings.model_copy(update={"workers": 1, "model_placement": "per_worker", "devices": ()})
    return Plan(settings=single, workers=1, devices=(), cpus=max(1, cpus)).worker_settings()


def assigned_cpus() -> int:
    """The CPUs Ray reserved for this replica (`ray_actor_options.num_cpus`), rounded, at least 1."""
    import ray

    return max(1, round(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


class FusionReplica:
    """One replica: the service's app, built when Ray starts the replica (nothing of it is pickled)."""

    #: Makes the replica's engine; a variant deployment (bench/ray_batch.py) may replace it.
    engine_factory: EngineFactory = staticmethod(torch_engine)

    def __init__(self) -> None:
        self.state: ServiceState | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        settings = replica_settings(Settings(), assigned_cpus())
        _log_to_stdout(settings.log_level)
        app = create_app(settings, engine=type(self).engine_factory)
        self.state = app.state.service
        return app

    async def check_health(self) -> None:
        """Ray's health check is the service's readiness. Ray runs it once right after the lifespan started (a
        failure there fails the replica's start): wait for the warm-up, so no request is routed to a replica that
        is still warming up. Later: raise while this replica cannot serve, and Ray replaces it."""
        state = self.state
        if state is None:
            raise RuntimeError("the service is not built yet")
        if not state.ready and state.warming is not None and not state.shutting_down:
            await asyncio.shield(state.warming)  # its error, if warm-up failed, fails the health check
        if state.serving_engine() is None:
            raise RuntimeError("not ready: " + ("shutting down" if state.shutting_down else "loading or warming up"))


def _log_to_stdout(level: str) -> None:
    """The service's JSON log lines (access lines included) on the replica's stdout, which Ray writes to the
    replica's log file; Ray's own loggers are left as Ray sets them."""
    logger = logging.getLogger("app")
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RequestIdFilter())
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


FusionServe = serve.deployment(serve.ingress()(FusionReplica))


def build(args: dict[str, Any] | None = None) -> Application:
    """The application (the serve config's `import_path: app.ray_serve:build`): one deployment with the defaults
    of `deployment_options` for the settings of this environment. It takes no arguments: settings are `FUSION_*`
    variables, Ray's options are the config's `deployments:` entry."""
    if args:
        raise ValueError(f"app.ray_serve:build takes no arguments (got {', '.join(args)}); set FUSION_* variables "
                         "in runtime_env.env_vars and Ray's options in the config's deployments: entry")
    return FusionServe.options(**deployment_options(Settings())).bind()
