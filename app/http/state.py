"""The service's state, typed, built once per app from Settings: what every route and middleware reads."""
from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from app.config import Settings
from app.engine.api import Engine
from app.errors import NotReady
from app.http.multipart import FormLimits
from app.inputs.budget import ByteBudget, Hold
from app.metrics import ServiceMetrics


@dataclass
class ServiceState:
    """One per app (`app.state.service`). `ready`: models loaded and warmed up, not draining. `budget`: the memory
    budget for requests in flight, which the lifespan sets once the models are loaded (app.http.app)."""

    settings: Settings
    engine: Engine
    metrics: ServiceMetrics
    form_limits: FormLimits = field(init=False)
    budget: ByteBudget = field(default_factory=ByteBudget)
    ready: bool = False
    draining: bool = False

    def __post_init__(self) -> None:
        self.form_limits = FormLimits(
            max_body_bytes=self.settings.max_body_bytes, max_part_bytes=self.settings.max_part_bytes
        )

    def ready_engine(self) -> Engine | None:
        """The engine while the service is ready, else None: the one definition of readiness that /readyz, /v2's
        ready endpoints and every model route share."""
        return self.engine if self.ready and not self.draining else None

    def engine_or_503(self) -> Engine:
        """The engine; NotReady (503) until the models are loaded and warmed up, and again once draining."""
        engine = self.ready_engine()
        if engine is None:
            if self.draining:
                raise NotReady("the service is shutting down; retry on another replica", retry_after_s=1)
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
