"""Access control (optional API keys), CORS, and the hygiene every response and log line owes: a request id,
no stack trace or internal path, keys never written anywhere."""
from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.logs import JsonFormatter, RequestIdFilter
from tests.server import Server, raw_exchange, running_server, status_of

KEYS = ("first-key-0123456789abcdef", "second-key-0123456789abcdef")
TEXT = {"text": (None, "hello")}


@pytest.fixture(scope="module")
def keyed(models_dir: Path) -> Iterator[Server]:
    with running_server(models_dir, api_keys=",".join(KEYS), cors_origins="https://app.example") as s:
        yield s


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_opens_every_endpoint(keyed: Server, key: str) -> None:
    with keyed.client(headers=bearer(key)) as c:
        assert c.post("/v1/predict", files=TEXT).status_code == 200
        assert c.post("/v1/models/tiny/predict", files=TEXT).status_code == 200
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models/tiny").status_code == 200
        assert c.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}, {"Authorization": KEYS[0]}],
    ids=["none", "basic", "bearer-without-token", "key-without-scheme"],
)
@pytest.mark.parametrize("method,path", [("POST", "/v1/predict"), ("GET", "/v1/models"), ("GET", "/metrics"),
                                         ("GET", "/v1/nothing-here")])
def test_no_bearer_token_is_401_with_a_challenge(keyed: Server, headers: dict, method: str, path: str) -> None:
    with keyed.client() as c:
        r = c.request(method, path, headers=headers, files=TEXT if method == "POST" else None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    error = r.json()["error"]
    assert error["code"] == "unauthorized" and "Bearer" in error["message"]
    assert error["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    "token", ["wrong-key-0123456789abcdef", KEYS[0][:-1], KEYS[0] + "x", KEYS[0].upper(), f"{KEYS[0]},{KEYS[1]}"]
)
def test_a_wrong_key_is_403(keyed: Server, token: str) -> None:
    with keyed.client(headers=bearer(token)) as c:
        r = c.post("/v1/predict", files=TEXT)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert token not in r.text


def test_the_scheme_is_case_insensitive(keyed: Server) -> None:
    with keyed.client(headers={"Authorization": f"bearer  {KEYS[1]}"}) as c:
        assert c.get("/v1/models").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json", "/static/swagger-ui/swagger-ui.css",
                                  "/playground", "/static/playground/playground.js", "/"])
def test_probes_the_docs_and_the_playground_need_no_key(keyed: Server, path: str) -> None:
    with keyed.client(follow_redirects=True) as c:
        assert c.get(path).status_code == 200


@pytest.mark.parametrize("prefix", [b"/static/swagger-ui", b"/static/playground"])
def test_the_public_asset_prefixes_lead_nowhere_else(keyed: Server, prefix: bytes) -> None:
    response = raw_exchange(
        keyed.url, b"GET " + prefix + b"/../../v1/models HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 404 and b'"default"' not in response


def test_every_key_is_compared_in_constant_time(keyed: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with keyed.client(headers=bearer(KEYS[0])) as c:
        assert c.get("/v1/models").status_code == 200
    assert len(calls) == len(KEYS)  # no early exit on the first match
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: the key's length leaks nothing either


def test_keys_never_reach_the_logs_or_the_settings_repr(keyed: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with keyed.client() as c:
        c.post("/v1/predict", files=TEXT, headers=bearer(KEYS[0]))
        c.post("/v1/predict", files=TEXT, headers=bearer("wrong-key-0123456789abcdef"))
        c.get("/readyz", headers=bearer(KEYS[1]))
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert "app.access" in logged
    for secret in (*KEYS, "wrong-key-0123456789abcdef"):
        assert secret not in logged
        assert secret not in repr(keyed.settings) and secret not in str(keyed.settings.model_dump())


def test_a_weak_key_stops_startup_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(api_keys="short-secret")
    assert "at least 16 characters" in str(info.value) and "short-secret" not in str(info.value)


def test_the_schema_declares_the_bearer_scheme_where_keys_are_needed(keyed: Server) -> None:
    with keyed.client() as c:
        spec = c.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "One of the service's API keys."
    }
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation and "401" not in operation["responses"]
            else:
                assert operation["security"] == [{"bearerAuth": []}]
                assert {"401", "403"} <= set(operation["responses"])


def test_without_keys_the_schema_has_no_security(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
        assert c.get("/v1/models").status_code == 200
    assert "securitySchemes" not in spec.get("components", {})
    assert all("security" not in op for ops in spec["paths"].values() for op in ops.values())


def test_every_422_in_the_schema_is_the_error_body_the_service_sends(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        body = "OipError" if path.startswith("/v2") else "ErrorBody"  # the Open Inference Protocol's own body
        for operation in operations.values():
            if "422" in operation["responses"]:
                schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{body}"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]


# --- CORS ---

def test_cors_is_off_by_default(server: Server) -> None:
    with server.client() as c:
        r = c.get("/v1/models", headers={"Origin": "https://app.example"})
        preflight = c.options("/v1/predict", headers={"Origin": "https://app.example",
                                                      "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in preflight.headers and preflight.status_code == 405


def test_cors_allows_the_configured_origin_only(keyed: Server) -> None:
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,x-request-id"}
    with keyed.client() as c:
        ok = c.options("/v1/predict", headers={"Origin": "https://app.example", **ask})
        other = c.options("/v1/predict", headers={"Origin": "https://evil.example", **ask})
        refused = c.post("/v1/predict", files=TEXT, headers={"Origin": "https://app.example"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    # A refusal still carries the CORS headers, so the page's script can read why.
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()


# --- request ids and error bodies ---

def test_an_unhandled_error_is_500_with_the_request_id_and_nothing_internal(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(accept: str | None) -> tuple[bytes, str]:
        raise RuntimeError("/srv/secret/path.py: boom")

    monkeypatch.setattr(server.app.state.service.metrics, "render", explode)
    with server.client() as c:
        r = c.get("/metrics", headers={"X-Request-ID": "unhandled-1"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "unhandled-1" == r.json()["error"]["request_id"]
    assert r.json()["error"]["code"] == "internal_error"
    assert "/srv" not in r.text and "boom" not in r.text and "Traceback" not in r.text


def test_every_log_line_of_a_request_carries_its_id(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(root, "level", logging.INFO)
    model = server.served()

    def broken(samples: list) -> list:
        logging.getLogger("app.test").warning("inside the model")  # the inference thread: no request of its own
        raise RuntimeError("boom")

    monkeypatch.setattr(model.predictor, "predict", broken)
    try:
        with server.client() as c:
            r = c.post("/v1/predict", files=TEXT, headers={"X-Request-ID": "logged-7"})
    finally:
        root.removeHandler(handler)
    assert r.status_code == 500
    entries = [json.loads(line) for line in lines]
    (failure,) = [e for e in entries if e["message"].startswith("model_failure")]
    assert failure["request_id"] == "logged-7"  # logged by the error handler, in the request's task
    (inside,) = [e for e in entries if e["message"] == "inside the model"]
    assert "request_id" not in inside


def test_a_head_over_the_limit_in_one_piece_is_431_with_a_request_id(server: Server) -> None:
    response = raw_exchange(server.url, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert status_of(response) == 431 and b"x-request-id: " in response.lower()
    with server.client() as c:
        assert c.get("/healthz", headers={"X-Fine": "a" * 20_000}).status_code == 200


def test_httpx_client_reaches_the_keyed_service_with_its_key(keyed: Server) -> None:
    r = httpx.get(f"{keyed.url}/v1/models", headers=bearer(KEYS[0]))
    assert r.status_code == 200 and r.json()["default"] == "tiny"


def test_refusals_on_protocol_paths_use_the_protocol_body(keyed: Server) -> None:
    with keyed.client() as c:
        v2 = c.get("/v2/models/tiny")
        v1 = c.get("/v1/models/tiny")
    assert v2.status_code == v1.status_code == 401
    assert isinstance(v2.json()["error"], str) and v1.json()["error"]["code"] == "unauthorized"
