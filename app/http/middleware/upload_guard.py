"""ASGI middleware that keeps slow, numerous or large uploads from exhausting the process, and closes connections
while the service drains."""
from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded, RequestTimeout, ServiceError
from app.http.errors import send_error
from app.http.state import UPLOAD_HOLD, ServiceState
from app.inputs.budget import Hold

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CLOSE = (b"connection", b"close")


class UploadGuardMiddleware:
    """- At most `max_inflight` requests with a body are in progress (uploading, decoding, queued or computing);
      more are refused at once with 503 and Retry-After, before their body is read.
    - Their bodies are held on the service's byte budget (`state.budget`): the declared Content-Length when the
      request is admitted (beyond the budget: 503 and Retry-After at once, before the body is read; a body larger
      than the budget could ever hold: 413), a body without one (chunked) as it arrives. The request's Hold is in
      its state for the route to hold more on (`app.http.state.upload_hold`); everything it holds is given back
      when the request ends: answered, failed, or its client gone.
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
        send = self._closing_when_draining(send)
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            busy = Overloaded(f"{self.max_inflight} requests are already in progress; retry after 1 s", retry_after_s=1)
            await send_error(busy, scope, receive, send)
            return
        hold = self.state.budget.hold()
        declared = _content_length(scope)
        try:
            if declared:
                hold.take(declared)
        except ServiceError as refused:  # nothing of the body has been read (the server discards it)
            await send_error(refused, scope, receive, send)
            return
        scope.setdefault("state", {})[UPLOAD_HOLD] = hold
        self.inflight += 1
        try:
            await self.app(scope, self._receiving(receive, hold, counted=declared is not None), send)
        finally:
            self.inflight -= 1
            hold.release()

    def _receiving(self, receive: Receive, hold: Hold, counted: bool) -> Receive:
        """`receive` with the body timeout, holding each chunk of a body whose length was not declared."""
        complete = False

        async def receive_guarded() -> Message:
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
            if message["type"] == "http.request":
                if not counted and (size := len(message.get("body", b""))):
                    hold.take(size)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        return receive_guarded

    def _closing_when_draining(self, send: Send) -> Send:
        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.state.shutting_down:
                message["headers"] = [*message.get("headers", []), _CLOSE]
            await send(message)

        return send_closing


def _content_length(scope: Scope) -> int | None:
    """The declared body length, if any (the HTTP parser guarantees the body is no longer)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
