"""Errors on the Open Inference Protocol's endpoints: the protocol's body `{"error": "message"}` with the HTTP status of
the service's error class, instead of /v1's error object (app/api/errors.py), which every other path keeps."""
from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from app.api.oip_schemas import OipError
from app.errors import ServiceError

log = logging.getLogger(__name__)
OIP_PREFIX = "/v2"


def oip_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(OipError(error=message).model_dump(), status_code=status, headers=headers)


class OipRoute(APIRoute):
    """A route whose every error, its dependencies' included, answers `{"error": message}`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                if exc.status_code >= 500:
                    log.warning("%s: %s", exc.code, exc.message)
                return oip_error(exc.status_code, exc.message, exc.headers)
            except RequestValidationError as exc:
                where = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())
                return oip_error(422, where or "invalid request")
            except HTTPException as exc:
                return oip_error(exc.status_code, str(exc.detail), dict(exc.headers or {}))
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                request_id = getattr(request.state, "request_id", None)
                return oip_error(500, f"an unexpected error occurred; report it with the request id {request_id}")

        return handle
