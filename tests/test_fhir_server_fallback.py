"""Prefetch fallback against a REAL FHIR server stub on 127.0.0.1 (tests/fhir_stub_server.py).

CDS Hooks 2.0: what the EHR did not prefetch is fetched from `fhirServer` with the
`fhirAuthorization` token; if that is impossible the service answers 412 naming the keys.
"""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fhir_stub_server import without_prefetch
from fixture_requests import SERVICE_URL, fixture_request

# Slow: a real FHIR stub server on 127.0.0.1 answers in place of the prefetch;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALL_KEYS = sorted(
    f"prefetch.{k}"
    for k in (
        "patient",
        "conditions",
        "observations",
        "observationsByCode",
        "immunizations",
        "medicationStatements",
        "medicationRequests",
        "medicationAdministrations",
        "allergies",
    )
)
TOKEN = "stub-token"


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """A Flask test client of an app allowing the given stub base URLs over plain http."""
    from cds_service.app import create_app

    apps: list[Any] = []

    def make(*allowed: str, **overrides: Any) -> Any:
        settings: dict[str, Any] = {
            "fhir_server_allowlist": allowed,
            "http_allowed_hosts": ("127.0.0.1",),
            "fhir_deadline_seconds": 3.0,
            **overrides,
        }
        app = create_app(testing=True, **settings)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["cds_fetcher"].session.close()


def post(client: Any, request_json: dict[str, Any]) -> Any:
    return client.post(SERVICE_URL[request_json["hook"]], json=request_json)


def cards_with_full_prefetch(client: Any, request_json: dict[str, Any]) -> Any:
    response = post(client, request_json)
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    return response.get_json()


SAME_CARD_SCENARIOS = [
    "eligible_patient_at_order_select",
    "eligible_man_with_large_record_at_order_sign",
    "hiv_test_positive",
    "only_one_prior_dmt",
    "live_vaccine_three_weeks_before_start",
    "tb_igra_positive",
    "hcv_rna_detected",
]


@pytest.mark.parametrize("name", SAME_CARD_SCENARIOS)
def test_request_without_prefetch_gets_the_same_cards_from_the_fhir_server(
    stubs, make_client, name
):
    """Without prefetch but with a reachable fhirServer, the cards equal those of full prefetch."""
    full = fixture_request(name)
    stub = stubs(full)
    client = make_client(stub.base_url)
    expected = cards_with_full_prefetch(client, full)
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.get_json() == expected
    assert len(stub.requests) == len(ALL_KEYS)
    assert {r.authorization for r in stub.requests} == {f"Bearer {TOKEN}"}


def test_request_without_prefetch_follows_the_servers_pages(stubs, make_client):
    """When the FHIR server pages its search results, every page is read and the cards match."""
    full = fixture_request("hiv_test_positive")
    stub = stubs(full, page_size=2)
    client = make_client(stub.base_url)
    expected = cards_with_full_prefetch(client, full)
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.get_json() == expected
    assert any("_offset" in r.query for r in stub.requests)


CONCURRENT_DELAY = 1.0
"""Each stub answer's delay: one after another, the eight keys would take 8 s, past the 6 s
deadline (a 412); at the same time about 1 s, which leaves a loaded machine 5 s to spare."""


def test_missing_keys_are_fetched_concurrently(stubs, make_client):
    """The keys are fetched at the same time, not one after another."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full, delay_seconds=CONCURRENT_DELAY)
    client = make_client(stub.base_url, fhir_deadline_seconds=6 * CONCURRENT_DELAY)
    started = time.monotonic()
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert stub.max_concurrent() >= 4
    assert elapsed < 8 * CONCURRENT_DELAY  # the deadline plus a generous margin


NO_DATA_CASES = [
    ("an alemtuzumab order cannot be evaluated", "eligible_patient_at_order_select", 412),
    ("an order for another drug needs no data", "order_for_another_drug", 200),
]


@pytest.mark.parametrize(
    ("case", "name", "status"), NO_DATA_CASES, ids=[c for c, _, _ in NO_DATA_CASES]
)
def test_without_prefetch_and_without_fhir_server(make_client, case, name, status):
    """No prefetch and no fhirServer: alemtuzumab gets 412 naming every key, others no cards."""
    client = make_client()
    response = post(client, without_prefetch(fixture_request(name), None))
    assert response.status_code == status
    body = response.get_json()
    if status == 200:
        assert body == {"cards": []}
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert sorted(body["issue"][0]["expression"]) == ALL_KEYS


def test_order_for_another_drug_never_calls_the_fhir_server(stubs, make_client):
    """An order for another drug gets {"cards": []} even when the FHIR server would fail."""
    request_json = fixture_request("order_for_another_drug")
    stub = stubs(request_json, fault="500")
    client = make_client(stub.base_url)
    response = post(client, without_prefetch(request_json, stub.base_url, TOKEN))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert stub.requests == []


DEADLINE = 2.0
"""Long enough for the healthy keys on a loaded machine."""
MARGIN = 3.0
"""Generous: a loaded machine may be late by this much; a service that ignored the deadline
would wait far longer (the slow answers take 10 s or more)."""
FAULT_CASES = [
    ("server error 500", {"fault": "500"}),
    ("token refused with 401", {"fault": "401"}),
    ("service sends a token the server does not accept", {"token": "another-token"}),
    ("answer slower than the deadline", {"fault": "slow"}),
    ("every answer slower than the deadline", {"delay_seconds": 10.0}),
    ("answer is not valid JSON", {"fault": "invalid-json"}),
    ("answer is an OperationOutcome", {"fault": "operation-outcome"}),
    ("search pages link to another origin", {"fault": "next-elsewhere"}),
]


@pytest.mark.parametrize(("case", "options"), FAULT_CASES, ids=[c for c, _ in FAULT_CASES])
def test_fhir_server_fault_is_a_412_within_the_deadline(stubs, make_client, caplog, case, options):
    """A failing FHIR server gives 412 naming the key, within the deadline, leaking no token."""
    caplog.set_level(logging.DEBUG)
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full, fault_types=("Observation",), **options)
    client = make_client(stub.base_url, fhir_deadline_seconds=DEADLINE)
    started = time.monotonic()
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    elapsed = time.monotonic() - started
    assert response.status_code == 412, response.get_data(as_text=True)[:1000]
    assert elapsed < DEADLINE + MARGIN
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert "prefetch.observations" in body["issue"][0]["expression"]
    assert TOKEN not in response.get_data(as_text=True)
    assert TOKEN not in caplog.text


def test_unreachable_fhir_server_is_a_412(stubs, make_client):
    """A fhirServer on which nothing listens gives 412, not an all-clear."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    stub.stop()
    client = make_client(stub.base_url, fhir_deadline_seconds=DEADLINE)
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert response.status_code == 412
    assert sorted(response.get_json()["issue"][0]["expression"]) == ALL_KEYS


NOT_ALLOWED_CASES = [
    ("another server is allow-listed", lambda base: ("https://ehr.example.org/fhir",), {}),
    ("plain http is not allowed for this host", lambda base: (base,), {"http_allowed_hosts": ()}),
    ("allow-list prefix stops inside a path segment", lambda base: (base[:-2],), {}),
    ("nothing is allow-listed", lambda base: (), {}),
]


@pytest.mark.parametrize(
    ("case", "allowlist", "overrides"), NOT_ALLOWED_CASES, ids=[c for c, _, _ in NOT_ALLOWED_CASES]
)
def test_fhir_server_not_allowed_is_a_412_and_never_called(
    stubs, make_client, case, allowlist, overrides
):
    """A fhirServer outside the allow-list is never called (no token sent) and gives 412."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    client = make_client(*allowlist(stub.base_url), **overrides)
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert response.status_code == 412
    body = response.get_json()
    assert sorted(body["issue"][0]["expression"]) == ALL_KEYS
    diagnostics = body["issue"][0]["diagnostics"]
    assert "not" in diagnostics and "fhirServer" in diagnostics
    assert stub.requests == []


def test_fhir_server_with_credentials_in_its_url_is_never_called(stubs, make_client):
    """A fhirServer URL carrying user:password is refused before any connection."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    client = make_client(stub.base_url)
    sneaky = stub.base_url.replace("http://", "http://user:secret@")
    response = post(client, without_prefetch(full, sneaky, TOKEN))
    assert response.status_code == 412
    assert "secret" not in response.get_data(as_text=True)
    assert stub.requests == []


# -- Observations filed outside the laboratory (prefetch keys observations / observationsByCode) --

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
NEGATIVE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "NEG",
        }
    ]
}


def observation(rid: str, loinc: str, category: str | None, patient_id: str) -> dict[str, Any]:
    """A final result read as negative, 17 days before the fixtures' planned start."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-20",
        "interpretation": [NEGATIVE],
    }
    if category is not None:
        resource["category"] = [{"coding": [{"system": CATEGORY, "code": category}]}]
    return resource


def checklist(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The summary card's checklist extension, by check (card contract 2.0)."""
    summary = next(
        c for c in body["cards"] if c["source"]["topic"]["code"] == "eligibility-summary"
    )
    checks = summary["extension"]["org.example.cds-service.checklist"]["checks"]
    return {check["topic"]: check for check in checks}


def topics(body: dict[str, Any]) -> dict[str, str]:
    """{check: indicator} of every check not met or unknown (a card or a grouped card's line)."""
    if not body["cards"]:
        return {}
    return {t: c["indicator"] for t, c in checklist(body).items() if "indicator" in c}


SKIN_TEST_CASES = [
    ("a skin test filed as a clinic exam clears the TB check", "exam"),
    ("a skin test filed without a category clears the TB check", None),
    ("a skin test filed as a laboratory result clears the TB check", "laboratory"),
]


@pytest.mark.parametrize(("case", "category"), SKIN_TEST_CASES, ids=[c for c, _ in SKIN_TEST_CASES])
def test_skin_test_filed_outside_the_laboratory_arrives_and_is_used(
    stubs, make_client, case, category
):
    """A tuberculin skin test (LOINC 1648-5) read in clinic reaches the TB check whatever its
    category: the observationsByCode key asks for it by code."""
    full = fixture_request("tb_screening_missing")
    stub = stubs(full)
    stub.by_type["Observation"].append(
        observation("tst-read-in-clinic", "1648-5", category, full["context"]["patientId"])
    )
    client = make_client(stub.base_url)
    assert topics(cards_with_full_prefetch(client, full))["tb-screening"] == "warning"
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    body = response.get_json()
    assert "tb-screening" not in topics(body)
    tb = checklist(body)["tb-screening"]
    assert tb["status"] == "met" and "negative on 2026-11-20" in tb["summary"]
    assert {"reference": "Observation/tst-read-in-clinic"} in tb["evidence"]
    by_code = [r.query["code"][0] for r in stub.requests if "code" in r.query]
    assert len(by_code) == 1 and "http://loinc.org|1648-5" in by_code[0].split(",")


def test_laboratory_key_alone_does_not_bring_a_skin_test_read_in_clinic(stubs, make_client):
    """The control: with observationsByCode prefetched empty, the laboratory search (the only
    one sent) does not return the clinic's skin test, so the TB check stays a warning."""
    full = fixture_request("tb_screening_missing")
    stub = stubs(full)
    stub.by_type["Observation"].append(
        observation("tst-read-in-clinic", "1648-5", "exam", full["context"]["patientId"])
    )
    client = make_client(stub.base_url)
    request_json = without_prefetch(full, stub.base_url, TOKEN)
    request_json["prefetch"] = {
        "observationsByCode": {"resourceType": "Bundle", "type": "searchset", "entry": []}
    }
    response = post(client, request_json)
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert topics(response.get_json())["tb-screening"] == "warning"
    assert [r.query.get("category") for r in stub.requests if r.path == "/fhir/Observation"] == [
        ["laboratory"]
    ]


def test_point_of_care_dipstick_filed_outside_the_laboratory_reaches_the_baseline_check(
    stubs, make_client
):
    """A urine dipstick read at the point of care (blood 1+, LOINC 5794-3, filed as an exam) is
    asked for by code, so its hematuria reaches the baseline-labs check; without it (the
    fixture's own prefetch) the same patient has no baseline card."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    dipstick = observation("dipstick-in-clinic", "5794-3", "exam", full["context"]["patientId"])
    del dipstick["interpretation"]
    dipstick.update({"effectiveDateTime": "2026-12-01", "valueString": "1+"})
    stub.by_type["Observation"].append(dipstick)
    client = make_client(stub.base_url)
    assert "baseline-labs" not in topics(cards_with_full_prefetch(client, full))
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    body = response.get_json()
    assert topics(body)["baseline-labs"] == "warning"
    baseline = checklist(body)["baseline-labs"]
    assert "unexplained hematuria" in baseline["summary"]
    assert {"reference": "Observation/dipstick-in-clinic"} in baseline["evidence"]
    review = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "review-before-start")
    assert "unexplained hematuria" in review["detail"]
    by_code = [r.query["code"][0] for r in stub.requests if "code" in r.query]
    assert len(by_code) == 1 and "http://loinc.org|5794-3" in by_code[0].split(",")


UNRELATED_CASES = [
    ("a cholesterol result", "2093-3"),
    ("a hemoglobin A1c result", "4548-4"),
]


@pytest.mark.parametrize(("case", "loinc"), UNRELATED_CASES, ids=[c for c, _ in UNRELATED_CASES])
def test_laboratory_result_with_an_unrelated_code_changes_nothing(stubs, make_client, case, loinc):
    """The laboratory key brings every result; one no check reads leaves the response as is."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    client = make_client(stub.base_url)
    without = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert without.status_code == 200, without.get_data(as_text=True)[:1000]
    stub.by_type["Observation"].append(
        observation("unrelated-lab", loinc, "laboratory", full["context"]["patientId"])
    )
    response = post(client, without_prefetch(full, stub.base_url, TOKEN))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.get_json() == without.get_json()
    served = stub.first_page(
        "Observation", full["context"]["patientId"], 1000, category="laboratory"
    )
    assert "unrelated-lab" in {e["resource"]["id"] for e in served["entry"]}
