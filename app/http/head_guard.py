"""uvicorn's httptools protocol with the two limits it lacks for a request's head (its line and headers):
httptools buffers a header of any length, and uvicorn waits for a head for ever, on a new connection as on a
kept-alive one. Here a head must arrive within `head_timeout_s` (counted from the connection's opening, or from
the first byte of a later request) and fit in `max_head_bytes`; else 408 or 431, and the connection is closed."""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.errors import HeadersTooLarge, RequestTimeout, ServiceError
from app.http.errors import JSON, error_parts

log = logging.getLogger(__name__)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; uvicorn turns it into a call to send_400_response."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring. A connection that sends nothing at all is closed after `head_timeout_s` too."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_head_bytes: int,
        head_timeout_s: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = max_head_bytes
        self.head_timeout_s = head_timeout_s
        self._in_head = False
        self._head_bytes = 0  # received while the head is incomplete: what httptools may be buffering
        self._parsed_head = 0  # the head's line and headers as parsed: a head that came in one read
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: ServiceError | None = None
        self._path = ""  # the request's path, once its line is parsed (for the error's API family)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head:  # still no end of headers after this chunk
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(self._head_too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._parsed_head = 0
        self._path = ""
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._parsed_head += len(url)
        self._path = url.split(b"?", 1)[0].decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._parsed_head += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        if self._parsed_head > self.max_head_bytes:
            self._refusal = self._head_too_large()
            raise _Refused  # before uvicorn starts the request
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _head_too_large(self) -> ServiceError:
        return HeadersTooLarge(f"the request line and headers are larger than {self.max_head_bytes:,} bytes")

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(
                RequestTimeout(f"the request line and headers did not arrive within {self.head_timeout_s:g} s")
            )
        elif self.cycle is None:  # connected, never sent a byte
            self.transport.close()

    def _refuse(self, error: ServiceError) -> None:
        """Answer `error` as the app would (the app never saw this request) and close the connection."""
        if self.transport.is_closing():
            return
        request_id = uuid.uuid4().hex
        log.info("refused a request from %s: %s", self.client[0] if self.client else "?", error.message)
        status, headers, body = error_parts(error, self._path, request_id)
        headers.pop("Connection", None)
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()]
        head += [
            f"content-type: {JSON}\r\n".encode(),
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: " + request_id.encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
        self._in_head = False
        self._disarm()
