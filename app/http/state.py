"""The service's state, typed, built once per app from Settings: what every route and middleware reads."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import Request

from app.config import Settings
from app.engine.api import Engine
from app.errors import NotReady
from app.http.multipart import FormLimits
from app.http.peers import Peers
from app.inputs.budget import ByteBudget, Hold
from app.metrics import ServiceMetrics


@dataclass
class ServiceState:
    """One per app (`app.state.service`). `ready`: models loaded and warmed up. In a multi-process service,
    `peers` holds every process's readiness and the service-wide draining flag, and this process is `index`.
    `budget`: the memory budget for requests in flight, which the lifespan sets once the models are loaded;
    `workers` and `processes`: how many processes hold such a budget and how many share the memory (model owners
    too), which size it. `warming`: the warm-up task while the lifespan runs (a host that must not route before it
    ends awaits it)."""

    settings: Settings
    engine: Engine
    metrics: ServiceMetrics
    peers: Peers | None = None
    index: int = 0
    workers: int = 1
    processes: int = 1
    form_limits: FormLimits = field(init=False)
    budget: ByteBudget = field(default_factory=ByteBudget)
    ready: bool = False
    draining: bool = False
    warming: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.form_limits = FormLimits(
            max_body_bytes=self.settings.max_body_bytes, max_part_bytes=self.settings.max_part_bytes
        )

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        if self.peers is not None:
            self.peers.set_ready(self.index, ready)

    @property
    def shutting_down(self) -> bool:
        return self.draining or (self.peers is not None and self.peers.draining)

    def ready_engine(self) -> Engine | None:
        """The engine while the whole service is ready (in a multi-process service, every process of it), else
        None: what /readyz and /v2's ready endpoints report."""
        engine = self.serving_engine()
        if engine is None or (self.peers is not None and not self.peers.all_ready):
            return None
        return engine

    def serving_engine(self) -> Engine | None:
        """The engine while this process can serve (loaded, warmed up, its models reachable, not draining), else
        None; a sibling process restarting does not stop this one from serving."""
        if not self.ready or self.shutting_down or not self.engine.healthy:
            return None
        return self.engine

    def engine_or_503(self) -> Engine:
        """The engine for a model route; NotReady (503) until this process can serve, and again once draining."""
        engine = self.serving_engine()
        if engine is None:
            if self.shutting_down:
                raise NotReady("the service is shutting down; retry on another replica", retry_after_s=1)
            if self.ready:
                raise NotReady("the model process is restarting; retry in a moment", retry_after_s=1)
            raise NotReady("the model is still loading; retry in a moment", retry_after_s=1)
        return engine


UPLOAD_HOLD = "upload_hold"  # the key of a request's Hold in scope["state"] (app.http.middleware.upload_guard)


def upload_hold(request: Request) -> Hold | None:
    """What the request holds on the memory budget (None for a request without a body)."""
    hold: Hold | None = request.scope.get("state", {}).get(UPLOAD_HOLD)
    return hold


def service(request: Request) -> ServiceState:
    """The state of the app serving `request`."""
    state: ServiceState = request.app.state.service
    return state
