"""ASGI middleware: a request id on every request, response and log line."""
from __future__ import annotations

import random
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import REQUEST_ID

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Honours a sane incoming `X-Request-ID`, else makes one; exposes it as `request.state.request_id` and to the
    logs (app.logs.REQUEST_ID), and echoes it in the response headers. It wraps the whole application, Starlette's
    500 handler included (see app.http.app.FusionApp), so even an unhandled error's response carries it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        # A correlation id, not a secret: the PRNG avoids uuid4's urandom syscall (and GIL hand-off) per request.
        request_id = incoming if _SANE_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        scope.setdefault("state", {})["request_id"] = request_id
        # Not reset afterwards: the server runs each request in its own task (and context), and the server's
        # own log line about an exception escaping the app comes after this returns.
        REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
