"""Prefetch semantics (CDS Hooks 2.0 #prefetch-template), against a real FHIR stub on 127.0.0.1.

Present -> used (a paginated searchset completed from fhirServer); absent or OperationOutcome ->
fetched from fhirServer; null -> no data; impossible -> 412 naming the keys.
"""

from __future__ import annotations

import copy
import importlib.util
import pathlib
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any
from urllib.parse import quote

import pytest
from fhir_stub_server import FhirStub
from fixture_requests import fixture_request

ROOT = pathlib.Path(__file__).resolve().parents[1]
URL = "/cds-services/lemtrada-order-select"
TOKEN = "stub-token"
AUTH = {
    "access_token": TOKEN,
    "token_type": "Bearer",
    "expires_in": 300,
    "scope": "patient/*.read",
    "subject": "cds-service",
}


@pytest.fixture
def make_app() -> Iterator[Callable[..., Any]]:
    """An app allowing the given stub base URLs over plain http on 127.0.0.1."""
    from cds_service.app import create_app

    apps: list[Any] = []

    def make(*allowed: str, **overrides: Any) -> Any:
        app = create_app(
            testing=True,
            fhir_server_allowlist=allowed,
            http_allowed_hosts=("127.0.0.1",),
            **overrides,
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["cds_fetcher"].session.close()


def with_server(request_json: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {**request_json, "fhirServer": base_url, "fhirAuthorization": AUTH}


def expected_body(app: Any, request_json: dict[str, Any]) -> Any:
    response = app.test_client().post(URL, json=request_json)
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    return response.get_json()


def paginate(
    request_json: dict[str, Any], pager: FhirStub, keys: dict[str, str], page_size: int
) -> dict[str, Any]:
    """The request with these prefetch keys replaced by the pager's first page (next links)."""
    out = copy.deepcopy(request_json)
    patient = out["context"]["patientId"]
    for key, resource_type in keys.items():
        out["prefetch"][key] = pager.first_page(
            resource_type, patient, page_size, **template_params(key)
        )
    return out


def template_params(key: str) -> dict[str, str]:
    """The search parameters of a key's template other than the patient (e.g. category)."""
    from cds_service.services import prefetch_templates

    _, _, query = prefetch_templates()[key].partition("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    params.pop("patient")
    return params


def test_paginated_prefetch_is_completed_from_the_fhir_server(stubs, make_app):
    """A prefetch whose searchsets have next links: the pages are read and the cards match."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    app = make_app(stub.base_url)
    paged = paginate(full, stub, {"observations": "Observation", "conditions": "Condition"}, 5)
    assert paged["prefetch"]["observations"]["link"][0]["relation"] == "next"
    response = app.test_client().post(URL, json=with_server(paged, stub.base_url))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.get_json() == expected_body(app, full)
    assert stub.requests, "the next pages were not fetched"
    assert all("_offset" in r.query for r in stub.requests), "a whole query was refetched"
    assert {r.authorization for r in stub.requests} == {f"Bearer {TOKEN}"}


def test_paginated_prefetch_without_fhir_server_is_a_412(stubs, make_app):
    """Only the first page prefetched and no fhirServer to read the rest: 412 naming the key."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    paged = paginate(full, stub, {"observations": "Observation"}, 5)
    response = make_app().test_client().post(URL, json=paged)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.observations"]
    assert stub.requests == []


def test_prefetch_next_link_on_another_origin_is_refetched_from_the_fhir_server(stubs, make_app):
    """A next link outside fhirServer's origin is not followed; the query goes to fhirServer."""
    full = fixture_request("eligible_patient_at_order_select")
    server, elsewhere = stubs(full), stubs(full)
    app = make_app(server.base_url, elsewhere.base_url)
    paged = paginate(full, elsewhere, {"observations": "Observation"}, 5)
    response = app.test_client().post(URL, json=with_server(paged, server.base_url))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.get_json() == expected_body(app, full)
    assert elsewhere.requests == []
    assert [(r.path, "_offset" in r.query) for r in server.requests] == [
        ("/fhir/Observation", False)
    ]


def test_prefetch_with_more_pages_than_the_cap_is_a_412(stubs, make_app):
    """More next pages than fhir_page_cap: the key is incomplete, so 412 (never a partial read)."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    app = make_app(stub.base_url, fhir_page_cap=3)
    paged = paginate(full, stub, {"observations": "Observation"}, 2)
    response = app.test_client().post(URL, json=with_server(paged, stub.base_url))
    assert response.status_code == 412
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["prefetch.observations"]
    assert (
        "observations: more than 3 pages (the page cap, CDS_FHIR_PAGE_CAP)"
        in (issue["diagnostics"])
    )
    assert len(stub.requests) == 3


OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "too-costly", "diagnostics": "too many"}],
}


def test_operation_outcome_prefetch_value_is_fetched_from_the_fhir_server(stubs, make_app):
    """An OperationOutcome in place of a prefetch value is fetched again from fhirServer."""
    full = fixture_request("hiv_test_positive")
    stub = stubs(full)
    app = make_app(stub.base_url)
    request_json = copy.deepcopy(full)
    request_json["prefetch"]["observations"] = OUTCOME
    response = app.test_client().post(URL, json=with_server(request_json, stub.base_url))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.get_json() == expected_body(app, full)
    assert [r.path for r in stub.requests] == ["/fhir/Observation"]


def test_operation_outcome_prefetch_value_without_fhir_server_is_a_412(make_app):
    """An OperationOutcome prefetch value and no fhirServer: 412 naming that key only."""
    request_json = fixture_request("hiv_test_positive")
    request_json["prefetch"]["observations"] = OUTCOME
    response = make_app().test_client().post(URL, json=request_json)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.observations"]


def test_null_prefetch_values_mean_no_data_and_nothing_is_fetched(stubs, make_app):
    """null prefetch values are 'no data': answered without calling fhirServer, same cards."""
    request_json = fixture_request("prefetch_values_null")
    stub = stubs(fixture_request("eligible_patient_at_order_select"))
    app = make_app(stub.base_url)
    response = app.test_client().post(URL, json=with_server(request_json, stub.base_url))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.get_json() == expected_body(app, request_json)
    assert stub.requests == []


def test_origin_records_where_each_key_came_from(stubs, make_app):
    """ResolvedData.origin tells prefetch, fhirServer, completed pages and null apart."""
    from cds_service.engine import answer
    from cds_service.hook_request import read_hook_request
    from cds_service.origin import Origin
    from cds_service.services import SERVICES_BY_ID

    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    app = make_app(stub.base_url)
    request_json = paginate(full, stub, {"conditions": "Condition"}, 1)
    request_json["prefetch"]["observations"] = OUTCOME
    request_json["prefetch"]["allergies"] = None
    del request_json["prefetch"]["immunizations"]
    hook_request = read_hook_request(with_server(request_json, stub.base_url), "order-select")
    result = answer(
        hook_request,
        SERVICES_BY_ID["lemtrada-order-select"],
        date(2026, 11, 30),
        app.extensions["cds_fetcher"],
    )
    assert result.origin == {
        "patient": Origin.PREFETCH,
        "conditions": Origin.FHIR_SERVER_PAGED,
        "observations": Origin.FHIR_SERVER,
        "observationsByCode": Origin.PREFETCH,
        "immunizations": Origin.FHIR_SERVER,
        "medicationStatements": Origin.PREFETCH,
        "medicationRequests": Origin.PREFETCH,
        "medicationAdministrations": Origin.PREFETCH,
        "allergies": Origin.PREFETCH_NULL,
    }


BAD_PREFETCH_CASES = [
    ("a prefetch value that is a list", {"observations": []}),
    ("a prefetch value that is a string", {"patient": "Patient/123"}),
]


@pytest.mark.parametrize(
    ("case", "change"), BAD_PREFETCH_CASES, ids=[c for c, _ in BAD_PREFETCH_CASES]
)
def test_prefetch_value_that_is_not_a_resource_is_a_400(make_app, case, change):
    """A prefetch value that is neither a resource, a Bundle nor null is the client's error."""
    request_json = fixture_request("eligible_patient_at_order_select")
    request_json["prefetch"].update(change)
    response = make_app().test_client().post(URL, json=request_json)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == [f"prefetch.{next(iter(change))}"]


def test_unknown_template_token_is_a_400():
    """A prefetch template token the hook context cannot fill is a 400 naming the context field."""
    from cds_service.errors import BadRequest
    from cds_service.fhir.prefetch import render_template

    with pytest.raises(BadRequest) as caught:
        render_template("Encounter/{{context.encounterId}}", {"patientId": "123"})
    assert caught.value.expression == ["context.encounterId"]
    assert render_template("Condition?patient={{context.patientId}}", {"patientId": "123"}) == (
        "Condition?patient=123"
    )


# -- what the EHR is asked for: short URLs, each result counted once -----------------------------

MAX_URL_CHARS = 2000
LONGEST_PATIENT_ID = "Pat-" + "0123456789abcdef." * 3 + "9" * 9
"""64 characters, the most an R4 id may have."""


def _templates() -> dict[str, str]:
    from cds_service.services import prefetch_templates

    return dict(prefetch_templates())


def _every_template() -> list[tuple[str, str, str]]:
    """(hook, key, template) of every service's prefetch (the order hooks share theirs)."""
    from cds_service.services import prefetch_for

    return [
        (hook, key, template)
        for hook in ("order-select", "patient-view")
        for key, template in prefetch_for(hook)[0].items()
    ]


@pytest.mark.parametrize(
    ("hook", "key", "template"),
    _every_template(),
    ids=[f"the {k} query at {h} fits in a URL" for h, k, _ in _every_template()],
)
def test_every_prefetch_query_fits_in_a_url(hook, key, template):
    """Rendered with a 64-character patient id and every character but letters, digits and
    `-._~` percent-encoded, each query is at most 2,000 characters (URL caps of EHRs, proxies)."""
    from cds_service.fhir.prefetch import render_template
    from cds_service.services import MAX_PREFETCH_URL_CHARS

    assert len(LONGEST_PATIENT_ID) == 64
    rendered = render_template(template, {"patientId": LONGEST_PATIENT_ID})
    assert LONGEST_PATIENT_ID in rendered
    assert len(quote(rendered, safe="")) <= MAX_PREFETCH_URL_CHARS == MAX_URL_CHARS


def test_a_result_sent_under_both_observation_keys_counts_once(make_app):
    """An EHR may answer both keys with one result (a laboratory result with a flagged code):
    the copies are one resource, so an unreadable HIV result is named once, not twice."""
    request_json = fixture_request("unreadable_hiv_result")
    twice = copy.deepcopy(request_json)
    laboratory = request_json["prefetch"]["observations"]
    twice["prefetch"]["observationsByCode"] = copy.deepcopy(laboratory)
    app = make_app()
    body = expected_body(app, twice)
    assert body == expected_body(app, request_json)
    summary = next(
        c for c in body["cards"] if c["source"]["topic"]["code"] == "eligibility-summary"
    )
    checks = summary["extension"]["org.example.cds-service.checklist"]["checks"]
    hiv = next(check for check in checks if check["topic"] == "hiv-screening")
    assert hiv["evidence"].count({"reference": "Observation/hiv-ag-ab-unreadable"}) == 1
    workup = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "pretreatment-workup")
    assert "1 record could not be read" in workup["detail"]


def test_fixture_builder_fills_the_observation_keys_as_the_templates_ask():
    """fhir_fixtures/build_requests.py keeps its own copy of the keys and of the flagged codes."""
    from cds_service.domain.terminology import value_set
    from cds_service.services import OBSERVATION_VALUE_SETS

    spec = importlib.util.spec_from_file_location(
        "build_requests", ROOT / "fhir_fixtures" / "build_requests.py"
    )
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert {"patient", *builder.PREFETCH_TYPES} == set(_templates())
    from cds_service.services import monitoring_prefetch_templates

    assert {"patient", *builder.MONITORING_PREFETCH_TYPES} == set(monitoring_prefetch_templates())
    flagged = {code for vs in OBSERVATION_VALUE_SETS for code in value_set(vs).outside_laboratory}
    assert builder.outside_laboratory_codes() == flagged


@pytest.mark.parametrize("key", ["observations", "observationsByCode"])
def test_readme_shows_the_observation_queries_as_served(key):
    """The README's table of what the EHR is asked for quotes each Observation query exactly."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = f"| `{key}` | `{_templates()[key].replace('|', chr(92) + '|')}` |"
    assert row in readme
