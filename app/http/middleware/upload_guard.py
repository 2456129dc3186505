"""ASGI middleware that keeps slow or numerous uploads from exhausting the process, and closes connections while
the service drains."""
from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded, RequestTimeout
from app.http.errors import send_error
from app.http.state import ServiceState

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CLOSE = (b"connection", b"close")


class UploadGuardMiddleware:
    """- At most `max_inflight` requests with a body are in progress (uploading, decoding, queued or computing);
      more are refused at once with 503 and Retry-After, before their body is read, so memory stays bounded by
      `max_inflight` x the body limit whatever the load.
    - A body that stops arriving for `body_timeout_s` ends the request with 408 (and the connection).
    - Once the service drains (`state.draining`), every response closes its connection, so clients open
      new ones, which a load balancer sends elsewhere and which the closed listener later refuses, rather than
      reusing one the server is about to close."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state
        self.max_inflight = state.settings.max_inflight_requests
        self.body_timeout_s = state.settings.body_timeout_s
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, self._closing_when_draining(send))
            return
        if self.inflight >= self.max_inflight:
            busy = Overloaded(f"{self.max_inflight} requests are already in progress; retry after 1 s", retry_after_s=1)
            await send_error(busy, scope, receive, self._closing_when_draining(send))
            return
        self.inflight += 1
        try:
            await self.app(scope, self._in_time(receive), self._closing_when_draining(send))
        finally:
            self.inflight -= 1

    def _in_time(self, receive: Receive) -> Receive:
        complete = False

        async def receive_in_time() -> Message:
            nonlocal complete
            if complete:  # the body is in: what follows (a disconnect) may take as long as it likes
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body stopped arriving for {self.body_timeout_s:g} s; send it without pauses"
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return receive_in_time

    def _closing_when_draining(self, send: Send) -> Send:
        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.state.shutting_down:
                message["headers"] = [*message.get("headers", []), _CLOSE]
            await send(message)

        return send_closing
