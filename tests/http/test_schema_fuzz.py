"""Schemathesis against the service's own OpenAPI schema, on a real server with API keys on: generated requests,
schema-valid and not, get no 5xx and only the statuses, headers, content types and bodies the schema documents;
a request without the key is refused. Bounded in examples, so it stays well under two minutes.

Driven through plain Hypothesis (`operation.as_strategy`) rather than schemathesis' pytest plugin, whose fixture
loader does not work with this pytest."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from app.config import Settings
from app.http.app import create_app
from tests.server import Server, running_server

KEY = "schema-fuzz-key-0123456789"
FIELDS = {"image", "text", "audio"}
# Every operation of the keyed service's schema, known without starting it.
OPERATIONS = [
    (method.upper(), path)
    for path, methods in create_app(Settings(api_keys=KEY)).openapi()["paths"].items()
    for method in methods
]


@pytest.fixture(scope="module")
def api_schema(models_dir: Path) -> Iterator[tuple[Server, schemathesis.BaseSchema]]:
    with running_server(models_dir, api_keys=KEY) as s:
        config = SchemathesisConfig.from_dict(
            {
                # The key as the schema's bearer scheme: so that negative cases may also leave it out (401 expected).
                "auth": {"openapi": {"bearerAuth": {"bearer": KEY}}},
                # Unknown query parameters are ignored by design (README), not refused like unknown form fields.
                "generation": {"allow-extra-parameters": False},
            }
        )
        yield s, schemathesis.openapi.from_url(f"{s.url}/openapi.json", config=config)


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_api_honours_its_schema(api_schema: tuple[Server, schemathesis.BaseSchema], method: str, path: str) -> None:
    server, schema = api_schema
    operation = schema[path][method]
    cases = st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])

    @given(case=cases)
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        # Excluded: "data the schema calls valid is accepted". The schema can say that a part is a binary file, not
        # that it is a decodable image or audio clip, so schema-valid random bytes are rightly refused (415/422).
        excluded = [positive_data_acceptance]
        if _only_retyped_form_fields(case):
            excluded.append(negative_data_rejection)
        case.call_and_validate(base_url=server.url, excluded_checks=excluded)

    check()


def _only_retyped_form_fields(case: schemathesis.Case) -> bool:
    """A negative case whose only violation is a multipart field of another JSON type (`text: false`): multipart
    carries text and bytes only, so it reaches the service as valid text ("false"). Negative cases with unknown
    fields, or negative in the query or path, are still checked."""
    meta = case.meta
    if meta is None or case.media_type != "multipart/form-data" or not isinstance(case.body, dict):
        return False
    negative = {location for location in meta.components if meta.is_negative_at(location)}
    return negative == {ParameterLocation.BODY} and set(case.body) <= FIELDS
