"""Optional API keys: when configured, every request but those to the public paths (probes, the docs page and
its schema) must carry `Authorization: Bearer <key>` with one of them."""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Forbidden, ServiceError, Unauthorized
from app.http.errors import send_error


class ApiKeyMiddleware:
    """401 (with a Bearer challenge: app.http.errors) without a bearer token, 403 with one that is not a configured key.

    Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every key, so neither the time taken
    nor an early exit tells a caller how close a guess was or which key matched. Keys are never logged."""

    def __init__(
        self, app: ASGIApp, keys: Sequence[str], public_paths: Iterable[str], public_prefixes: tuple[str, ...] = ()
    ) -> None:
        if not keys:
            raise ValueError("ApiKeyMiddleware needs at least one key")
        self.app = app
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k in keys)
        self._public_paths = frozenset(public_paths)
        self._public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope["headers"])
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await send_error(refusal, scope, receive, send)

    def _is_public(self, path: str) -> bool:
        return path in self._public_paths or path.startswith(self._public_prefixes)

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> ServiceError | None:
        value = next((v for k, v in headers if k == b"authorization"), None)
        if value is None:
            return Unauthorized("this service needs an API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = value.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return Unauthorized("send the API key as 'Authorization: Bearer <key>'")
        digest = hashlib.sha256(token).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return None if matched else Forbidden("the API key is not valid for this service")
