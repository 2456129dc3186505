"""ASGI middleware that observes every HTTP request once: Prometheus metrics and one JSON access-log line.

The route is the matched template (`/v1/models/{name}/predict`), never the raw path, so label values stay few.
Per-request facts that only a route knows (modalities, batch size) arrive through `request.state`.
"""
from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import FIELDS
from app.metrics import UNMATCHED_ROUTE, ServiceMetrics

access_log = logging.getLogger("app.access")

# Probes and scrapes arrive every few seconds: their lines are debug, the rest info.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request, as the router left it in the scope:
    a route's own template, `<prefix>/{path}` for a mounted app (static files), or 'unmatched'."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if template:
        return template
    if "endpoint" in scope and "app_root_path" in scope:  # a Mount matched: it extended root_path by its prefix
        return scope["root_path"][len(scope["app_root_path"]) :] + "/{path}"
    return UNMATCHED_ROUTE


class TelemetryMiddleware:
    """Times each request from arrival to the end of its response, then records it."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets when an exception escapes before a response starts

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            self.metrics.observe_request(scope["method"], route, status, seconds)
            level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
            if access_log.isEnabledFor(level):
                state = scope.get("state", {})
                modalities = state.get("modalities")
                access_log.log(
                    level,
                    "request",
                    extra={
                        FIELDS: {
                            "request_id": state.get("request_id"),
                            "method": scope["method"],
                            "route": route,
                            "status": status,
                            "latency_ms": round(seconds * 1e3, 3),
                            "modalities": None if modalities is None else list(modalities),
                            "batch_size": state.get("batch_size"),
                        }
                    },
                )
