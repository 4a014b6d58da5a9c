"""Fuzzing the API: schemathesis from openapi.yaml, and mutations of real hook requests.

Both run against the Flask app in-process (WSGI, no network) with a bounded number of examples.
Schemathesis derives requests from the contract (positive and negative); it rarely produces an
alemtuzumab order, so the second test takes the fixture requests the scenarios use and breaks one
node at a time (wrong type, null, huge number, deletion) at every level of the JSON, where the
evaluation code actually runs. Every response must be documented and never a 5xx.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fixture_requests import SERVICE_URL
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service.app import create_app

# Slow: generated requests from openapi.yaml; `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = ROOT / "fhir_fixtures" / "requests"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SLOW_OK = [
    HealthCheck.too_slow,
    HealthCheck.filter_too_much,
    HealthCheck.function_scoped_fixture,
    HealthCheck.data_too_large,
]

schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """One unauthenticated app with a throw-away SQLite file for the whole module."""
    database = tmp_path_factory.mktemp("fuzz") / "t.sqlite3"
    return create_app(testing=True, database_url=f"sqlite:///{database}")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=SLOW_OK)
def test_generated_requests_get_documented_answers_and_never_a_5xx(
    case: schemathesis.Case, fuzzed_app: Flask
) -> None:
    """Any request schemathesis derives from the contract gets a documented, non-5xx answer."""
    case.call_and_validate(checks=CHECKS, app=fuzzed_app)


Path_ = tuple[str | int, ...]


def json_paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every location in a JSON document (objects and arrays included)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from json_paths(value, (*prefix, index))


def outside_prefetch(path: Path_) -> bool:
    """The envelope, context and draft orders, plus the first levels of each prefetch value."""
    return not path or path[0] != "prefetch" or len(path) <= 5


FIXTURES = {
    "order-select": "eligible_patient_at_order_select",
    "order-sign": "eligible_patient_at_order_sign",
}
DOCS = {
    hook: json.loads((REQUESTS / f"{name}.json").read_text()) for hook, name in FIXTURES.items()
}
PATHS = {hook: list(json_paths(doc)) for hook, doc in DOCS.items()}
DELETE = object()

# Values that are the wrong type almost everywhere, or extreme where a value has the right type.
wrong_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "x" * 100_000,
            "Patient/",
            "9999-99-99",
            "2026-02-30T25:61:00Z",
            "urn:uuid:",
            "Bundle",
            "MedicationRequest/does-not-exist",
        ]
    ),
    st.just([]),
    st.just({}),
    st.just([[[]]]),
    st.just({"resourceType": "Bundle"}),
    st.just({"resourceType": "OperationOutcome", "issue": []}),
    st.just(DELETE),
)


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[str, Any]:
    hook = draw(st.sampled_from(sorted(DOCS)))
    paths = PATHS[hook]
    path = draw(
        st.one_of(
            st.sampled_from([p for p in paths if outside_prefetch(p)]), st.sampled_from(paths)
        )
    )
    value = draw(wrong_values)
    doc = copy.deepcopy(DOCS[hook])
    if not path:
        return hook, (None if value is DELETE else value)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return hook, doc


@given(request=mutated_requests())
@settings(max_examples=120, deadline=None, suppress_health_check=SLOW_OK)
def test_a_real_request_broken_anywhere_gets_a_documented_answer_not_a_5xx(
    request: tuple[str, Any], fuzzed_app: Flask
) -> None:
    """Breaking any one node of a real hook request gives a card answer, 400 or 412, never 5xx."""
    hook, body = request
    response = fuzzed_app.test_client().post(SERVICE_URL[hook], json=body)  # contract-checked
    assert response.status_code in (200, 400, 412), response.get_data(as_text=True)[:500]
