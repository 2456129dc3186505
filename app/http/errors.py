"""The one place where an error becomes an HTTP response, per API family:

- /v1 and every other path: `{"error": {"code", "message", "request_id"}}`;
- the Open Inference Protocol's paths (/v2): the protocol's `{"error": "message"}`.

The status code comes from the error's class, headers from its data (`retry_after_s` -> `Retry-After`). Route
handlers, ASGI middleware and the HTTP protocol itself (which answers before the app sees a request) all render
through `error_parts`, so a response is the same wherever the error was raised.
"""
from __future__ import annotations

import logging
import math

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app import errors as e

log = logging.getLogger(__name__)

OIP_PREFIX = "/v2"
JSON = "application/json"
CLIENT_CLOSED = 499  # nginx's "client closed request": written to the access log, read by nobody

# The most specific class listed in an error's MRO decides its status.
STATUS: dict[type[e.ServiceError], int] = {
    e.ServiceError: 500,
    e.InvalidInput: 422,
    e.MalformedRequest: 400,
    e.UnsupportedMediaType: 415,
    e.PayloadTooLarge: 413,
    e.HeadersTooLarge: 431,
    e.ModelNotFound: 404,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.RequestTimeout: 408,
    e.Overloaded: 503,
    e.NotReady: 503,
    e.DeadlineExceeded: 504,
    e.ModelFailure: 500,
}
# What the protocol asks of some answers, whatever the API family.
_EXTRA_HEADERS: dict[type[e.ServiceError], dict[str, str]] = {
    e.Unauthorized: {"WWW-Authenticate": 'Bearer realm="fusion-serve"'},
    e.RequestTimeout: {"Connection": "close"},
}
_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large"}


def status_of(exc: e.ServiceError) -> int:
    if isinstance(exc, _HttpError):
        return exc.status
    return next(STATUS[k] for k in type(exc).__mro__ if k in STATUS)


def is_oip(path: str) -> bool:
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def error_parts(
    exc: e.ServiceError, path: str, request_id: str | None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and JSON body of the response to `exc` on `path`."""
    status = status_of(exc)
    if status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    headers = dict(next((h for k, h in _EXTRA_HEADERS.items() if isinstance(exc, k)), {}))
    if isinstance(exc, _HttpError):
        headers.update(exc.headers)
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if is_oip(path):
        body = orjson.dumps({"error": exc.message})
    else:
        body = orjson.dumps({"error": {"code": exc.code, "message": exc.message, "request_id": request_id}})
    return status, headers, body


def error_response(exc: e.ServiceError, path: str, request_id: str | None) -> Response:
    status, headers, body = error_parts(exc, path, request_id)
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def request_id_of(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


async def send_error(exc: e.ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with `exc` from ASGI middleware, which runs outside the app's exception handlers."""
    await error_response(exc, scope["path"], request_id_of(scope))(scope, receive, send)


def as_service_error(exc: Exception) -> e.ServiceError | None:
    """A framework error (validation, routing) as the service's error, so it renders like every other."""
    if isinstance(exc, e.ServiceError):
        return exc
    if isinstance(exc, RequestValidationError):
        return e.InvalidInput(_validation_message(exc))
    if isinstance(exc, StarletteHTTPException):
        return _HttpError(exc.status_code, str(exc.detail), dict(exc.headers or {}))
    return None


class _HttpError(e.ServiceError):
    """A status the framework decided (404 no route, 405 method): rendered with the status it chose."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.code = _HTTP_CODES.get(status, "http_error")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def unexpected_error(request_id: str | None) -> e.ServiceError:
    """What a caller is told of a bug: nothing internal, the request id to report."""
    return e.ServiceError(f"an unexpected error occurred; report it with the request id {request_id}")


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app raises renders here; no stack trace or internal path ever reaches a caller."""

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientDisconnect):  # the client hung up mid-body: nobody to answer
            return Response(status_code=CLIENT_CLOSED)
        error = as_service_error(exc)
        if error is None:
            log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
            error = unexpected_error(request_id_of(request.scope))
        if isinstance(error, _HttpError) and error.status == 404 and not is_oip(request.url.path):
            error = _HttpError(404, f"no route {request.url.path}; see /docs", error.headers)
        return error_response(error, request.url.path, request_id_of(request.scope))

    for kind in (e.ServiceError, RequestValidationError, StarletteHTTPException, ClientDisconnect, Exception):
        app.add_exception_handler(kind, handle)
