"""The service under uvicorn, as `fusion-serve serve` runs it: the guarded HTTP protocol, the settings' limits and
timeouts, and a drain before the graceful shutdown."""
from __future__ import annotations

import functools
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from app.config import Settings
from app.http.app import begin_draining, create_app
from app.http.head_guard import GuardedHttpToolsProtocol
from app.http.plan import Plan
from app.logs import logging_config

log = logging.getLogger(__name__)
STARTUP_FAILED = 3  # uvicorn's exit status when the application fails to start


def uvicorn_config(app: ASGIApp, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The server's configuration for `settings`; `overrides` replace any uvicorn.Config argument."""
    protocol = functools.partial(
        GuardedHttpToolsProtocol, max_head_bytes=settings.max_header_bytes, head_timeout_s=settings.header_timeout_s
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol,
        "ws": "none",  # no WebSocket routes: an Upgrade request is an ordinary (refused) request
        "lifespan": "on",
        "log_level": settings.log_level,
        "log_config": logging_config(settings.log_level),  # JSON lines on stdout
        "access_log": False,  # the service writes its own access log (app.http.middleware.telemetry)
        "server_header": False,
        "timeout_keep_alive": settings.keep_alive_s,
        # After the listener closes: how long admitted requests get to finish (a queued one starts within
        # request_timeout_s or gets 504) before uvicorn cancels what is left.
        "timeout_graceful_shutdown": max(1, int(settings.request_timeout_s) + 5),
    }
    return uvicorn.Config(app, **{**options, **overrides})


class GracefulServer(uvicorn.Server):
    """A uvicorn server that drains on SIGTERM before it shuts down: `on_drain` makes the app stop admitting
    (/readyz and new requests answer 503), and the listener stays open `drain_delay_s` more, so load balancers see
    the 503s and stop sending before connections are refused; then uvicorn's graceful shutdown closes the listener,
    lets every running request finish and runs the lifespan shutdown. SIGINT, or a second SIGTERM, skips the rest
    of the drain."""

    def __init__(self, config: uvicorn.Config, *, drain_delay_s: float, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self.drain_delay_s = drain_delay_s
        self.on_drain = on_drain
        self._terminated_at: float | None = None
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._terminated_at is None and not self.should_exit:
            self._terminated_at = time.monotonic()  # acted upon at the next tick, outside the signal handler
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._terminated_at is not None and not self.should_exit:
            if not self._draining:
                self._draining = True
                self.on_drain()
                log.info("SIGTERM: draining for %g s before closing the listener", self.drain_delay_s)
            if time.monotonic() - self._terminated_at >= self.drain_delay_s:
                self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings) -> int:
    """Run the service until SIGTERM/SIGINT; the process's exit status. One process, or a supervisor of several
    (app.http.supervisor), as the settings' plan says."""
    plan = Plan.from_settings(settings)
    if not plan.single_process:
        from app.http import supervisor

        return supervisor.run(settings, plan)
    settings = plan.worker_settings()  # thread counts sized for the CPUs this process may use
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    server = GracefulServer(config, drain_delay_s=settings.drain_delay_s, on_drain=lambda: begin_draining(app))
    server.run()
    return 0 if server.started else STARTUP_FAILED
