"""LeanRoute: the predict routes' lean request handling validates, injects and refuses like FastAPI would."""
from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from pydantic import BaseModel

from app.api.errors import install_error_handlers
from app.api.lean_route import LeanRoute


async def greeting(request: Request) -> str:
    return "hello"


Greeting = Annotated[str, Depends(greeting)]


class Client:
    """Real HTTP semantics through httpx's ASGI transport, driven synchronously."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, url: str, **kw: object) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.get(url, **kw)  # type: ignore[arg-type]

        return asyncio.run(go())


@contextmanager
def client_for(app: FastAPI) -> Iterator[Client]:
    yield Client(app)


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(route_class=LeanRoute)

    @router.get("/items/{name}")
    async def item(
        request: Request,
        name: Annotated[str, Path(max_length=5)],
        greet: Greeting,
        k: Annotated[int, Query(ge=1, le=9)] = 3,
    ) -> Response:
        return Response(f"{greet} {name} {k} {request.method}", media_type="text/plain")

    @router.get("/not-a-response")
    async def not_a_response() -> Response:
        return {"a": 1}  # type: ignore[return-value]

    app.include_router(router)
    return app


def test_parameters_dependencies_and_the_request_are_injected() -> None:
    with client_for(make_app()) as c:
        assert c.get("/items/abc", params={"k": 7}).text == "hello abc 7 GET"
        assert c.get("/items/abc").text == "hello abc 3 GET"  # the default


def test_invalid_parameters_get_fastapis_validation_error() -> None:
    with client_for(make_app()) as c:
        for url in ("/items/abc?k=0", "/items/abc?k=ten", "/items/toolongname"):
            r = c.get(url)
            assert r.status_code == 422, url
            assert r.json()["error"]["code"] == "invalid_input"
        assert "k" in c.get("/items/abc?k=0").json()["error"]["message"]
        assert "name" in c.get("/items/toolongname").json()["error"]["message"]


def test_dependency_overrides_are_honoured() -> None:
    app = make_app()

    async def other(request: Request) -> str:
        return "hi"

    app.dependency_overrides[greeting] = other
    with client_for(app) as c:
        assert c.get("/items/abc").text == "hi abc 3 GET"


def test_an_endpoint_that_returns_no_response_is_a_500() -> None:
    with client_for(make_app()) as c:
        assert c.get("/not-a-response").status_code == 500


class Body(BaseModel):
    x: int


async def nested(value: Greeting) -> str:
    return value


@pytest.mark.parametrize("kind", ["sync", "body", "nested dependency", "header"])
def test_endpoints_it_cannot_serve_are_refused_when_declared(kind: str) -> None:
    router = APIRouter(route_class=LeanRoute)

    def sync_endpoint() -> Response:
        return Response()

    async def body_endpoint(body: Body) -> Response:
        return Response()

    async def nested_endpoint(value: Annotated[str, Depends(nested)]) -> Response:
        return Response()

    async def header_endpoint(x_token: Annotated[str | None, Depends(lambda: None)] = None) -> Response:
        return Response()

    endpoint = {"sync": sync_endpoint, "body": body_endpoint, "nested dependency": nested_endpoint,
                "header": header_endpoint}[kind]
    with pytest.raises(TypeError, match="LeanRoute cannot serve"):
        router.add_api_route("/x", endpoint, methods=["POST"])
