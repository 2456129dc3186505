"""The OpenAPI schema as the service really behaves: its own error body everywhere, the body-timeout answer, and
the bearer scheme (Swagger UI's Authorize button) when API keys are required."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI

from app.http.errors import is_oip

SCHEME = "bearerAuth"
_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_OIP_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/OipError"}}}  # on /v2 paths
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")  # the second is referenced by the first only


def install_openapi(app: FastAPI, *, bearer: bool, public_paths: Iterable[str]) -> None:
    """Wrap `app.openapi` so the generated schema (built once, on first use) is adjusted as described above."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    public = frozenset(public_paths)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _adjust(generate(), bearer=bearer, public=public)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _adjust(schema: dict[str, Any], *, bearer: bool, public: frozenset[str]) -> dict[str, Any]:
    for path, operations in schema.get("paths", {}).items():
        error = _OIP_ERROR if is_oip(path) else _ERROR
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:  # FastAPI's default describes its own body, not the one this service sends
                responses["422"] = {"description": responses["422"].get("description", "Invalid input."),
                                    "content": error}
            if "requestBody" in operation:
                responses.setdefault("408", {"description": "The request body stopped arriving.", "content": error})
            if bearer and path not in public:
                operation["security"] = [{SCHEME: []}]
                responses.setdefault("401", {"description": "No API key (a Bearer token).", "content": error})
                responses.setdefault("403", {"description": "Not a valid API key.", "content": error})
    components = schema.setdefault("components", {})
    if bearer:
        components["securitySchemes"] = {
            SCHEME: {"type": "http", "scheme": "bearer", "description": "One of the service's API keys."}
        }
    paths = json.dumps(schema.get("paths", {}))
    if not any(f"#/components/schemas/{name}" in paths for name in _FASTAPI_VALIDATION):
        for name in _FASTAPI_VALIDATION:
            components.get("schemas", {}).pop(name, None)
    return schema
