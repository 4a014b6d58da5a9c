"""Discovery and the error contract of the service endpoints (issue #2, items 2 and 6)."""

from __future__ import annotations

import json

import pytest
from fixture_requests import fixture_request
from flask.testing import FlaskClient

from cds_service.domain.terminology import value_set
from cds_service.services import OBSERVATION_VALUE_SETS


def test_discovery_lists_the_three_lemtrada_services(client: FlaskClient) -> None:
    """GET /cds-services names the order-select, order-sign and patient-view (monitoring)
    services with their texts."""
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.get_json()["services"]}
    assert {k: s["hook"] for k, s in services.items()} == {
        "lemtrada-order-select": "order-select",
        "lemtrada-order-sign": "order-sign",
        "lemtrada-monitoring": "patient-view",
    }
    for service in services.values():
        assert service["title"] and service["description"] and service["usageRequirements"]


def test_prefetch_templates_use_only_the_patient_id_token(client: FlaskClient) -> None:
    """Prefetch templates fill only {{context.patientId}}: no draftOrders or selections tokens."""
    for service in client.get("/cds-services").get_json()["services"]:
        for template in service["prefetch"].values():
            tokens = {part.split("}}")[0] for part in template.split("{{")[1:]}
            assert tokens == {"context.patientId"}, template


def test_observation_prefetch_asks_for_laboratory_results_and_by_code_for_tests_filed_elsewhere(
    client: FlaskClient,
) -> None:
    """Laboratory results are asked for without codes; by code only the concepts the value sets
    flag as possibly filed outside the laboratory (a skin test read in clinic, a urine hCG)."""
    service = client.get("/cds-services").get_json()["services"][0]
    assert service["prefetch"]["observations"] == (
        "Observation?patient={{context.patientId}}&category=laboratory"
    )
    assert service["prefetch"]["observationsByCode"] == (
        "Observation?patient={{context.patientId}}&code=" + ",".join(FILED_OUTSIDE_THE_LABORATORY)
    )
    every_code = {code for vs in OBSERVATION_VALUE_SETS for code in value_set(vs).codes}
    assert len(FILED_OUTSIDE_THE_LABORATORY) < len(every_code) / 10


# The tests a clinic may file outside the laboratory category, written out here (not read from
# the value sets the service reads), so a change to what the EHR is asked for shows in this diff.
FILED_OUTSIDE_THE_LABORATORY = [
    "http://loinc.org|1648-5",  # tuberculin skin test wheal, read in clinic 3 days after
    "http://loinc.org|20454-5",  # urine protein by dipstick, often read at the point of care
    "http://loinc.org|2106-3",  # hCG (pregnancy test) [Presence] in Urine
    "http://loinc.org|2112-1",  # hCG beta subunit (pregnancy test) [Presence] in Urine
    "http://loinc.org|5794-3",  # urine hemoglobin (blood) by dipstick, point of care
    "http://loinc.org|80384-1",  # hCG (pregnancy test) [Presence] in Urine, rapid immunoassay
    "http://loinc.org|82810-3",  # Pregnancy status (US Core; filed as social history)
]


BAD_BODIES = [
    ("truncated JSON", b'{"hook": "order-select", "hookInstance"', 400, "not valid JSON"),
    ("empty body", b"", 400, "empty"),
    ("a JSON array instead of an object", b"[]", 400, "JSON object"),
    ("missing hook", json.dumps({"hookInstance": "x", "context": {}}).encode(), 400, "'hook'"),
    (
        "missing hookInstance",
        json.dumps({"hook": "order-select", "context": {}}).encode(),
        400,
        "'hookInstance'",
    ),
    (
        "missing context",
        json.dumps({"hook": "order-select", "hookInstance": "x"}).encode(),
        400,
        "'context'",
    ),
    (
        "hook of another service",
        json.dumps({"hook": "order-sign", "hookInstance": "x", "context": {}}).encode(),
        400,
        "order-select",
    ),
    (
        "context without draftOrders",
        json.dumps(
            {
                "hook": "order-select",
                "hookInstance": "x",
                "context": {"patientId": "p", "selections": []},
            }
        ).encode(),
        400,
        "context.draftOrders",
    ),
    (
        "selections not a list",
        json.dumps(
            {
                "hook": "order-select",
                "hookInstance": "x",
                "context": {
                    "patientId": "p",
                    "selections": "MedicationRequest/1",
                    "draftOrders": {},
                },
            }
        ).encode(),
        400,
        "context.selections",
    ),
    ("invalid UTF-8", b'{"hook": "\xff\xfe"}', 400, "not valid JSON"),
    (
        "context.userId of the wrong type (a userId missing is tolerated: tests/test_hook_spec.py)",
        json.dumps(
            {
                "hook": "order-select",
                "hookInstance": "x",
                "context": {
                    "patientId": "p",
                    "selections": [],
                    "userId": 42,
                    "draftOrders": {"resourceType": "Bundle"},
                },
            }
        ).encode(),
        400,
        "context.userId",
    ),
]


@pytest.mark.parametrize("case,body,status,mentions", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_malformed_requests_get_an_operation_outcome(
    client: FlaskClient, case: str, body: bytes, status: int, mentions: str
) -> None:
    """Bad input gets a 400 OperationOutcome that says what is wrong, never a stack trace."""
    response = client.post(
        "/cds-services/lemtrada-order-select", data=body, content_type="application/json"
    )
    assert response.status_code == status
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert mentions in outcome["issue"][0]["diagnostics"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_service_is_404_with_an_operation_outcome(client: FlaskClient) -> None:
    """A service id we do not offer answers 404 saying so, without repeating the id sent."""
    response = client.post(
        "/cds-services/no-such-service", json=fixture_request("eligible_patient_at_order_select")
    )
    assert response.status_code == 404
    assert response.get_json()["issue"][0]["diagnostics"] == "No CDS service with this id."
    assert "no-such-service" not in response.get_data(as_text=True)


def test_wrong_method_is_405_with_an_operation_outcome(client: FlaskClient) -> None:
    """GET on a service endpoint answers 405 as an OperationOutcome."""
    response = client.get("/cds-services/lemtrada-order-select")
    assert response.status_code == 405
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_same_request_gives_byte_identical_responses(client: FlaskClient) -> None:
    """Same request in, same cards out: bytes, uuids and order."""
    body = fixture_request("prefetch_values_null")
    first = client.post("/cds-services/lemtrada-order-select", json=body).get_data()
    second = client.post("/cds-services/lemtrada-order-select", json=body).get_data()
    assert first == second


def test_card_uuids_follow_the_hook_instance(client: FlaskClient) -> None:
    """A new hookInstance gives new card uuids; the same hookInstance gives the same ones."""
    body = fixture_request("vzv_status_unknown")
    uuids = [
        c["uuid"]
        for c in client.post("/cds-services/lemtrada-order-select", json=body).get_json()["cards"]
    ]
    body["hookInstance"] = "6a1e0c56-7d0a-4c57-9b51-3a6c1f1d2b90"
    others = [
        c["uuid"]
        for c in client.post("/cds-services/lemtrada-order-select", json=body).get_json()["cards"]
    ]
    assert len(uuids) == len(others) == 2
    assert not set(uuids) & set(others)


def test_most_urgent_card_comes_first_and_summary_carries_the_worst(client: FlaskClient) -> None:
    """Cards are ordered critical, warning, info; the summary's indicator is the worst one."""
    body = fixture_request("live_vaccine_three_weeks_before_start")
    body["prefetch"]["observations"] = None  # adds warnings for the screening checks
    cards = client.post("/cds-services/lemtrada-order-select", json=body).get_json()["cards"]
    rank = {"critical": 2, "warning": 1, "info": 0}
    indicators = [rank[c["indicator"]] for c in cards]
    assert indicators == sorted(indicators, reverse=True)
    summary = next(c for c in cards if c["source"]["topic"]["code"] == "eligibility-summary")
    assert summary["indicator"] == "critical"
    assert cards[0]["source"]["topic"]["code"] == "live-vaccine-gap"


def test_unreadable_evidence_is_named_in_the_card(client: FlaskClient) -> None:
    """An Observation failing R4B validation is counted as unreadable on the work-up card, named
    in the checklist extension, and the check is not met."""
    cards = client.post(
        "/cds-services/lemtrada-order-select", json=fixture_request("unreadable_hiv_result")
    ).get_json()["cards"]
    by_topic = {c["source"]["topic"]["code"]: c for c in cards}
    assert "could not be read" in by_topic["pretreatment-workup"]["detail"]
    checks = by_topic["eligibility-summary"]["extension"]["org.example.cds-service.checklist"]
    hiv = next(c for c in checks["checks"] if c["topic"] == "hiv-screening")
    assert hiv["status"] == "unknown"
    assert any(e.get("reference", "").startswith("Observation/") for e in hiv["evidence"])
