"""One place that maps every error to an HTTP response `{"error": {"code", "message", "request_id"}}`."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app.api.oip_errors import OIP_PREFIX, oip_error
from app.errors import ServiceError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return _error_json(request_id_of(request), status, code, message, headers)


def _error_json(
    request_id: str | None, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers=headers)


def service_error_response(exc: ServiceError, request_id: str | None) -> JSONResponse:
    """The response for one of the service's errors, wherever it was raised."""
    if exc.status_code >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    return _error_json(request_id, exc.status_code, exc.code, exc.message, exc.headers)


async def send_service_error(exc: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with `exc` from ASGI middleware, which runs outside the exception handlers below; on the Open
    Inference Protocol's paths, in that protocol's error body."""
    if scope["path"].startswith(OIP_PREFIX):
        response = oip_error(exc.status_code, exc.message, exc.headers)
    else:
        response = service_error_response(exc, scope.get("state", {}).get("request_id"))
    await response(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; no stack trace or internal path ever reaches a caller."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc, request_id_of(request))

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, exc: ClientDisconnect) -> Response:
        # The client hung up while sending its body: no one to answer, nothing to log but the access line.
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_input", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.status_code != 404 else f"no route {request.url.path}; see /docs"
        return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            request, 500, "internal_error", "an unexpected error occurred; report it with the request id"
        )
