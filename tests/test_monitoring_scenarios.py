"""The monitoring service (patient-view, `lemtrada-monitoring`) end to end, as a table.

fhir_fixtures/monitoring_scenarios.json is the monitoring table: one row per patient, a name that
reads as a clinical sentence, the date the chart is opened (`today`; overlays date their records
relative to it) and what the service must answer: `expected_cards` is the EXACT
{check topic: indicator} of every check not met or unknown in the summary card's checklist, plus
`monitoring-summary`: that card's indicator ({} means no cards at all); `expected_card_topics`
the topics of the cards in the order they are sent; `expected_pending` the checks ordered and
awaiting a result; `expected_dates` members of the checklist's `dates`; `expected_orders` the
LOINC codes the work-up card suggests ordering, in order. The order services'
table (scenarios.json) keys rows by T0 and draft orders, which a patient-view request has not,
hence a table of its own; fhir_fixtures/build_requests.py builds both, this one into
fhir_fixtures/requests/monitoring/.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from datetime import date
from typing import Any
from unittest import mock

import pytest
from fhir_stub_server import without_prefetch
from fixture_requests import fixture_request

from cds_service.domain.rules.monitoring import MONITORING_RULES
from cds_service.services import MAX_PREFETCH_URL_CHARS, SERVICES_BY_ID

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = json.loads((ROOT / "fhir_fixtures" / "monitoring_scenarios.json").read_text("utf-8"))
URL = "/cds-services/lemtrada-monitoring"
SUMMARY = "monitoring-summary"
CHECKLIST = "org.example.cds-service.checklist"
PROBLEM_STATUSES = {"not-met", "unknown"}
QUIET_STATUSES = {"met", "not-applicable", "pending"}
ROWS = {row["name"]: row for row in TABLE}
TREATED = "treated_patient_with_monitoring_on_time_gets_one_info_summary"


def request_of(name: str) -> dict[str, Any]:
    return fixture_request(f"monitoring/{name}")


@pytest.fixture(scope="module")
def answers(module_client: Any) -> Iterator[dict[str, tuple[int, Any]]]:
    """Every row's (status, body), each asked on the row's `today`."""
    out: dict[str, tuple[int, Any]] = {}
    for name, row in ROWS.items():
        today = date.fromisoformat(row["today"])
        with mock.patch("cds_service.http_api.today", return_value=today):
            response = module_client.post(f"/cds-services/{row['service']}", json=request_of(name))
        out[name] = (response.status_code, response.get_json())
    yield out


def checklist(cards: list[dict[str, Any]]) -> dict[str, Any]:
    (summary,) = [c for c in cards if c["source"]["topic"]["code"] == SUMMARY]
    extension: dict[str, Any] = summary["extension"][CHECKLIST]
    assert extension["version"] == 1
    return extension


CARD_ROWS = [row["name"] for row in TABLE]


@pytest.mark.parametrize("name", CARD_ROWS)
def test_monitoring_scenario_returns_expected_cards(
    answers: dict[str, tuple[int, Any]], name: str
) -> None:
    """Each check the row names is not met or unknown with the row's indicator, every other
    check is met, pending or not applicable with no indicator, and the summary card carries the
    row's indicator; {} means {"cards": []} (untreated, Campath only, ended, deceased)."""
    row = ROWS[name]
    status, body = answers[name]
    assert status == 200, body
    expected = row["expected_cards"]
    if not expected:
        assert body == {"cards": []}
        return
    cards = body["cards"]
    extension = checklist(cards)
    checks = extension["checks"]
    assert [c["topic"] for c in checks] == [rule.topic for rule in MONITORING_RULES]
    got = {c["topic"]: c["indicator"] for c in checks if c["status"] in PROBLEM_STATUSES}
    for check in checks:
        if check["status"] in QUIET_STATUSES:
            assert "indicator" not in check, check
    (summary,) = [c for c in cards if c["source"]["topic"]["code"] == SUMMARY]
    got[SUMMARY] = summary["indicator"]
    assert got == expected
    if "expected_card_topics" in row:
        assert [c["source"]["topic"]["code"] for c in cards] == row["expected_card_topics"]
    pending = {c["topic"] for c in checks if c["status"] == "pending"}
    assert pending == set(row.get("expected_pending", ()))
    assert extension["dates"].items() >= row.get("expected_dates", {}).items()
    if "expected_orders" in row:
        (workup,) = [c for c in cards if c["source"]["topic"]["code"] == "monitoring-workup"]
        assert [
            s["actions"][0]["resource"]["code"]["coding"][0]["code"] for s in workup["suggestions"]
        ] == row["expected_orders"]


@pytest.mark.parametrize("name", [n for n in CARD_ROWS if ROWS[n]["expected_cards"]])
def test_every_monitored_patient_gets_the_dated_checklist(
    answers: dict[str, tuple[int, Any]], name: str
) -> None:
    """The summary card is always sent to a monitored patient; its checklist has the order
    services' shape plus the four dates, monitoring ending 48 calendar months after the last
    infusion."""
    cards = answers[name][1]["cards"]
    dates = checklist(cards)["dates"]
    assert set(dates) == {"lastInfusion", "monitoringEndsOn", "nextTshDue", "earliestNextCourse"}
    last = date.fromisoformat(dates["lastInfusion"])
    assert dates["monitoringEndsOn"] == last.replace(year=last.year + 4).isoformat()
    assert date.fromisoformat(dates["earliestNextCourse"]) > last


@pytest.mark.parametrize("name", [n for n in CARD_ROWS if ROWS[n]["expected_cards"]])
def test_work_up_card_suggests_one_order_per_overdue_test(
    answers: dict[str, tuple[int, Any]], name: str
) -> None:
    """A monitoring-workup card offers one recommended ServiceRequest per test, any of them."""
    for card in answers[name][1]["cards"]:
        if card["source"]["topic"]["code"] != "monitoring-workup":
            continue
        assert card["selectionBehavior"] == "any"
        resources = [action["resource"] for s in card["suggestions"] for action in s["actions"]]
        assert all(s["isRecommended"] for s in card["suggestions"])
        assert {r["resourceType"] for r in resources} == {"ServiceRequest"}
        codes = [r["code"]["coding"][0]["code"] for r in resources]
        assert len(codes) == len(set(codes))


def test_monitoring_prefetch_asks_for_what_monitoring_reads() -> None:
    """Discovery's monitoring templates read the infusion history, the results, the Conditions,
    the active orders and the Procedures of {{context.patientId}} only, each URL within the
    project's limit with a 64-character id."""
    prefetch = SERVICES_BY_ID["lemtrada-monitoring"].discovery()["prefetch"]
    assert prefetch["medicationAdministrations"] == (
        "MedicationAdministration?patient={{context.patientId}}"
    )
    assert prefetch["serviceRequests"] == (
        "ServiceRequest?patient={{context.patientId}}&status=active"
    )
    assert {"patient", "conditions", "observations", "procedures"} <= set(prefetch)
    assert "immunizations" not in prefetch and "allergies" not in prefetch
    for template in prefetch.values():
        filled = template.replace("{{context.patientId}}", "x" * 64)
        assert len(filled) <= MAX_PREFETCH_URL_CHARS


def test_missing_monitoring_prefetch_without_fhir_server_is_a_412(module_client: Any) -> None:
    """Without prefetch and without a fhirServer the service cannot know whether the patient was
    treated: 412 naming every key, never an all-clear."""
    response = module_client.post(URL, json=without_prefetch(request_of(TREATED), None))
    assert response.status_code == 412
    expression = response.get_json()["issue"][0]["expression"]
    prefetch = SERVICES_BY_ID["lemtrada-monitoring"].discovery()["prefetch"]
    assert expression == sorted(f"prefetch.{key}" for key in prefetch)


def test_a_patient_view_request_to_an_order_service_is_refused(module_client: Any) -> None:
    """The order services answer their own hook only: patient-view sent there is a 400."""
    response = module_client.post("/cds-services/lemtrada-order-select", json=request_of(TREATED))
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["hook"]


@pytest.mark.slow
def test_missing_monitoring_prefetch_is_read_from_the_fhir_server(stubs: Any) -> None:
    """With no prefetch but a fhirServer (a real stub on 127.0.0.1) the cards are those of the
    full prefetch, and every key was read once with the request's token."""
    from cds_service.app import create_app

    full = request_of(TREATED)
    stub = stubs(full)
    app = create_app(
        testing=True,
        fhir_server_allowlist=(stub.base_url,),
        http_allowed_hosts=("127.0.0.1",),
        fhir_deadline_seconds=5.0,
    )
    client = app.test_client()
    try:
        with mock.patch("cds_service.http_api.today", return_value=date(2026, 11, 30)):
            expected = client.post(URL, json=full)
            fetched = client.post(URL, json=without_prefetch(full, stub.base_url, "stub-token"))
    finally:
        app.extensions["cds_fetcher"].session.close()
        app.extensions["cds_audit"].flush()  # the writer thread is done with the db
        app.extensions["cds_db"].dispose()
    assert expected.status_code == fetched.status_code == 200, fetched.get_data(as_text=True)
    assert fetched.get_json() == expected.get_json()
    prefetch = SERVICES_BY_ID["lemtrada-monitoring"].discovery()["prefetch"]
    assert len(stub.requests) == len(prefetch)
    assert {r.authorization for r in stub.requests} == {"Bearer stub-token"}


def test_feedback_on_a_monitoring_card_is_stored_per_check(module_client: Any) -> None:
    """Feedback posted to the monitoring service's feedback endpoint is accepted (the cards were
    audited like the order services')."""
    with mock.patch("cds_service.http_api.today", return_value=date(2026, 11, 30)):
        cards = module_client.post(URL, json=request_of(TREATED)).get_json()["cards"]
    response = module_client.post(
        f"{URL}/feedback",
        json={
            "feedback": [
                {
                    "card": cards[0]["uuid"],
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-30T10:05:31Z",
                    "overrideReason": {"userComment": "seen in clinic today"},
                }
            ]
        },
    )
    assert response.status_code == 200
    assert response.get_json() == {}


def _with_infusion_dates(date_text: str | None, deceased: bool = False) -> dict[str, Any]:
    """The on-time patient's request with every Lemtrada administration's date replaced (None
    keeps it), and the patient recorded as deceased if asked."""
    request_json = json.loads(json.dumps(request_of(TREATED)))
    for entry in request_json["prefetch"]["medicationAdministrations"]["entry"]:
        if date_text is not None:
            entry["resource"]["effectiveDateTime"] = date_text
    if deceased:
        request_json["prefetch"]["patient"]["deceasedDateTime"] = "2026-11-01"
    return request_json


UNREADABLE_HISTORY = [
    pytest.param(
        "sometime in spring",
        False,
        ["monitoring-summary"],
        id="Lemtrada given on a date that cannot be read -> a warning to confirm the dates",
    ),
    pytest.param(
        None,
        False,
        ["monitoring-summary"],
        id="control: the same patient with readable dates -> the usual info summary",
    ),
    pytest.param(
        "sometime in spring",
        True,
        [],
        id="an unreadable history of a patient recorded as deceased -> no cards",
    ),
]


@pytest.mark.parametrize(("date_text", "deceased", "topics"), UNREADABLE_HISTORY)
def test_an_unreadable_infusion_history_is_never_an_empty_answer(
    module_client: Any, date_text: str | None, deceased: bool, topics: list[str]
) -> None:
    today = date.fromisoformat(ROWS[TREATED]["today"])
    with mock.patch("cds_service.http_api.today", return_value=today):
        response = module_client.post(URL, json=_with_infusion_dates(date_text, deceased))
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == topics
    if not cards:
        return
    (card,) = cards
    checks = checklist(cards)["checks"]
    if date_text is None:
        assert card["indicator"] == "info"
        assert all(c["status"] != "unknown" for c in checks)
        return
    assert card["indicator"] == "warning"
    assert "could not be read" in card["summary"]
    assert {c["topic"] for c in checks} == {rule.topic for rule in MONITORING_RULES}
    assert {(c["status"], c["indicator"]) for c in checks} == {("unknown", "warning")}
    assert {"reference": "MedicationAdministration/lemtrada-course-1-day-1"} in checks[0][
        "evidence"
    ]
