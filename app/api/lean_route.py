"""LeanRoute: a FastAPI route for the hot path, declared, validated and documented like any other, but served
without FastAPI's general dependency solver.

On one CPU core every microsecond of per-request Python is a microsecond the model does not get. FastAPI's
solver handles every kind of parameter and dependency (sub-dependencies, caches, `yield`, bodies, security
scopes); a predict route needs four values: its path and query parameters (validated by FastAPI's own field
validation, so errors read the same) and two dependencies that are plain `async def dep(request)`. A route
that needs more than that is refused when the app is built, not served wrongly.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from inspect import iscoroutinefunction
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

_Dependency = Callable[[Request], Awaitable[Any]]


class LeanRoute(APIRoute):
    """Serves an endpoint whose parameters are path/query fields, the `Request`, and dependencies of the shape
    `async def dep(request: Request)`, and which returns a `Response` itself (no response-model serialisation).
    The app's dependency overrides (`app.dependency_overrides`) are honoured."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        _check_lean(dependant, self.path)
        endpoint = dependant.call
        assert endpoint is not None
        path_fields, query_fields = dependant.path_params, dependant.query_params
        request_name = dependant.request_param_name
        dependencies: list[tuple[str, _Dependency, str]] = [
            (d.name, d.call, d.request_param_name) for d in dependant.dependencies  # type: ignore[misc]
        ]

        async def handle(request: Request) -> Response:
            values: dict[str, Any] = {}
            errors: list[Any] = []
            if path_fields:
                found, errors = request_params_to_args(path_fields, request.path_params)
                values.update(found)
            if query_fields:
                found, more = request_params_to_args(query_fields, request.query_params)
                values.update(found)
                errors += more
            if errors:
                raise RequestValidationError(errors, endpoint_ctx=None)
            overrides = getattr(request.app, "dependency_overrides", None)
            for name, call, param in dependencies:
                if overrides:
                    call = overrides.get(call, call)
                values[name] = await call(**{param: request})
            if request_name:
                values[request_name] = request
            response = await endpoint(**values)
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: a LeanRoute endpoint must return a Response")
            return response

        return handle


def _check_lean(dependant: Dependant, path: str) -> None:
    def refuse(why: str) -> None:
        raise TypeError(f"{path}: LeanRoute cannot serve this endpoint: {why}; use an ordinary APIRoute")

    if not iscoroutinefunction(dependant.call):
        refuse("the endpoint is not `async def`")
    if dependant.body_params or dependant.header_params or dependant.cookie_params:
        refuse("it declares body, header or cookie parameters")
    if (
        dependant.http_connection_param_name
        or dependant.websocket_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    ):
        refuse("it takes a parameter other than the Request, path/query fields and dependencies")
    for dep in dependant.dependencies:
        simple = (
            dep.name
            and dep.request_param_name
            and iscoroutinefunction(dep.call)
            and not (dep.dependencies or dep.path_params or dep.query_params or dep.header_params)
            and not (dep.cookie_params or dep.body_params or dep.security_scopes_param_name)
        )
        if not simple:
            refuse(f"dependency {dep.call!r} is not of the shape `async def dep(request: Request)`")
