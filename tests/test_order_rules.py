"""The order checks: course interval, dose/route/days, premedication and herpes prophylaxis.

The order scenarios are rows of the clinical table, fhir_fixtures/scenarios.json (T0 = 2026-12-07,
eligible evidence plus what each name says), whose whole expected answers tests/test_scenarios.py
asserts; here, what the order cards say and suggest. The small tables exercise the dosage readers
directly.
"""

from __future__ import annotations

import json
import pathlib
from datetime import date
from typing import Any

import pytest
from fixture_requests import SERVICE_URL, fixture_request

from cds_service.domain.orders import AlemtuzumabOrder, OrderContext
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules import RULES
from cds_service.domain.rules import order as order_rules
from cds_service.domain.rules.course import course_days, dose_mg, route_of
from cds_service.domain.rules.order import (
    COURSE_INTERVAL,
    check_course_interval,
)
from cds_service.models import validation_problem

ROOT = pathlib.Path(__file__).resolve().parents[1]
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
SUMMARY = "eligibility-summary"
INTERVAL = COURSE_INTERVAL
REVIEW, INFUSION_DAY = "review-before-start", "infusion-day-orders"
"""The grouped cards (card contract 2.0) that show the dose and infusion-day findings."""
# The checks of the order itself: those declared in rules/order.py.
ORDER_TOPICS = {rule.topic for rule in RULES if rule.check.__module__ == order_rules.__name__}


def _cards(client: Any, name: str) -> list[dict[str, Any]]:
    request = fixture_request(name)
    response = client.post(SERVICE_URL[request["hook"]], json=request)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def _by_topic(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {card["source"]["topic"]["code"]: card for card in cards}


def test_every_order_topic_fires_in_some_scenario() -> None:
    """Every order topic has a scenario in fhir_fixtures/scenarios.json whose expected cards, at
    the scenario's own hook, carry it."""
    table = json.loads((ROOT / "fhir_fixtures" / "scenarios.json").read_text(encoding="utf-8"))
    fired = {
        topic
        for row in table
        if "expected_cards" in row
        for topic in row["expected_cards"][row["hook"]]
    }
    assert ORDER_TOPICS - fired == set()


def test_interval_card_names_the_last_dose_and_the_earliest_allowed_start(client: Any) -> None:
    """A second course 10 months after the first names the last dose day and 12 months after it."""
    card = _by_topic(_cards(client, "second_course_ten_months_after_the_first"))[INTERVAL]
    assert "2026-02-06" in card["summary"] and "2027-02-06" in card["summary"]
    assert len(card["summary"]) < 140
    assert "PI section 2" in card["detail"]


def test_five_dose_records_and_a_statement_of_one_course_count_as_one_course(client: Any) -> None:
    """The first course recorded twice (administrations and a statement) makes this course 2,
    3 days."""
    card = _by_topic(_cards(client, "second_course_ordered_for_five_days"))[REVIEW]
    assert "course 2 is 3 consecutive days" in card["detail"]


def _suggestion_resources(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [action["resource"] for s in card["suggestions"] for action in s["actions"]]


def test_premedication_suggestion_is_methylprednisolone_1_g_iv_on_days_1_to_3(client: Any) -> None:
    """The premedication card offers a new R4 MedicationRequest for methylprednisolone 1,000 mg
    IV."""
    card = _by_topic(_cards(client, "order_sign_without_premedication"))[INFUSION_DAY]
    assert card["selectionBehavior"] == "any"
    [resource] = _suggestion_resources(card)
    assert validation_problem(resource) is None
    assert (resource["resourceType"], resource["status"], resource["intent"]) == (
        "MedicationRequest",
        "draft",
        "order",
    )
    assert resource["medicationCodeableConcept"]["coding"][0]["code"] == "6902"
    assert resource["medicationCodeableConcept"]["coding"][0]["system"] == RXNORM
    [dosage] = resource["dosageInstruction"]
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 1000
    assert dosage["route"]["coding"][0] == {
        "system": SNOMED,
        "code": "47625008",
        "display": "Intravenous route",
    }
    repeat = dosage["timing"]["repeat"]
    assert repeat["boundsPeriod"] == {"start": "2026-12-07", "end": "2026-12-09"}
    assert repeat["count"] == 3
    assert "id" not in resource  # a new resource, never the request's own


def test_prophylaxis_suggestion_is_acyclovir_from_day_1_until_2_months_after_the_course(
    client: Any,
) -> None:
    """The herpes card offers acyclovir 400 mg (RxNorm 197311) orally twice daily from T0."""
    card = _by_topic(_cards(client, "order_sign_without_premedication_or_prophylaxis"))[
        INFUSION_DAY
    ]
    [resource] = [
        r
        for r in _suggestion_resources(card)
        if r["reasonCode"][0]["text"].startswith("Herpes prophylaxis")
    ]
    assert validation_problem(resource) is None
    assert resource["medicationCodeableConcept"]["coding"][0]["code"] == "197311"
    [dosage] = resource["dosageInstruction"]
    assert dosage["route"]["coding"][0]["code"] == "26643006"
    assert dosage["doseAndRate"][0]["doseQuantity"] == {
        "value": 400,
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    }
    # First course: last infusion 2026-12-11, plus 2 months.
    assert dosage["timing"]["repeat"]["boundsPeriod"] == {
        "start": "2026-12-07",
        "end": "2027-02-11",
    }
    assert dosage["timing"]["repeat"]["frequency"] == 2
    assert all(s["actions"][0]["description"] for s in card["suggestions"])


def test_summary_reminds_of_rems_infusion_setting_and_monitoring(client: Any) -> None:
    """The summary carries the REMS, 2-hour observation and 48-month monitoring reminders."""
    cards = _by_topic(_cards(client, "order_sign_with_premedication_and_prophylaxis"))
    detail = cards[SUMMARY]["detail"]
    for phrase in (
        "prescriber is certified",
        "healthcare facility is certified",
        "patient is enrolled",
        "at least 2 hours after each infusion",
        "until 48 months after the last infusion",
        "CBC with differential",
        "urine cell counts",
        "TSH",
        "ALT, AST",
        "skin examination",
    ):
        assert phrase in detail


@pytest.mark.parametrize(
    ("case", "quantity", "mg"),
    [
        ("12 mg is 12 mg", {"value": 12, "unit": "mg", "code": "mg"}, 12.0),
        ("1.2 mL at 10 mg/mL is 12 mg", {"value": 1.2, "unit": "mL", "code": "mL"}, 12.0),
        ("0.012 g is 12 mg", {"value": 0.012, "unit": "g", "code": "g"}, 12.0),
        ("a vial is not readable as mg", {"value": 1, "unit": "vial"}, None),
    ],
)
def test_lemtrada_dose_is_read_in_mg(case: str, quantity: dict[str, Any], mg: float | None) -> None:
    """Doses in mg, g or mL (at 10 mg/mL) convert to mg; other units stay unknown."""
    got, _ = dose_mg({"doseAndRate": [{"doseQuantity": quantity}]}, mg_per_ml=10)
    assert got == pytest.approx(mg) if mg is not None else got is None


@pytest.mark.parametrize(
    ("case", "route", "iv"),
    [
        ("SNOMED intravenous", {"coding": [{"system": SNOMED, "code": "47625008"}]}, True),
        ("text IV", {"text": "IV"}, True),
        (
            "local code displayed INTRAVENOUS",
            {"coding": [{"system": "urn:x", "code": "4", "display": "INTRAVENOUS"}]},
            True,
        ),
        ("SNOMED subcutaneous", {"coding": [{"system": SNOMED, "code": "34206005"}]}, False),
        ("text oral", {"text": "by mouth"}, False),
        ("bare local code", {"coding": [{"system": "urn:x", "code": "4"}]}, None),
    ],
)
def test_route_is_recognised(case: str, route: dict[str, Any], iv: bool | None) -> None:
    """IV by SNOMED 47625008 or words; another route by words or SNOMED; a bare local code is
    unknown."""
    assert route_of({"route": route}).iv is iv


@pytest.mark.parametrize(
    ("case", "repeat", "days"),
    [
        ("count 5", {"count": 5}, 5),
        (
            "period 2026-12-07 to 2026-12-09 inclusive",
            {"boundsPeriod": {"start": "2026-12-07", "end": "2026-12-09"}},
            3,
        ),
        ("duration 3 days", {"boundsDuration": {"value": 3, "code": "d"}}, 3),
        (
            "count and period agreeing",
            {"count": 3, "boundsPeriod": {"start": "2026-12-07", "end": "2026-12-09"}},
            3,
        ),
        (
            "count and period disagreeing",
            {"count": 5, "boundsPeriod": {"start": "2026-12-07", "end": "2026-12-09"}},
            None,
        ),
        ("no timing", {}, None),
    ],
)
def test_days_in_the_course(case: str, repeat: dict[str, Any], days: int | None) -> None:
    """Days come from count, an inclusive boundsPeriod or boundsDuration; contradictions are
    unknown."""
    assert course_days({"timing": {"repeat": repeat}})[0] == days


def _interval_finding(administrations: list[dict[str, Any]], t0: date) -> Any:
    record = PatientRecord.build(
        "p1",
        [
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in administrations],
            }
        ],
    )
    request = {
        "resourceType": "MedicationRequest",
        "id": "new",
        "status": "draft",
        "intent": "order",
    }
    context = OrderContext(
        "order-select", AlemtuzumabOrder(request, "test", ()), t0, "test", (request,)
    )
    return check_course_interval(record, context, load_policy())


def _given(day: str, code: str = "1594663", status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": f"a-{day}-{code}",
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": day,
    }


@pytest.mark.parametrize(
    ("case", "given", "status", "severity"),
    [
        ("a dose 11 months before is too soon", [_given("2026-01-10")], "not met", "CRITICAL"),
        ("a dose 12 months before is allowed", [_given("2025-12-07")], "met", "INFO"),
        (
            "Campath 3 months before is not a Lemtrada course",
            [_given("2026-09-01", "828267")],
            "met",
            "INFO",
        ),
        (
            "a not-done dose is not a course",
            [_given("2026-09-01", status="not-done")],
            "met",
            "INFO",
        ),
        (
            "a dose dated only by month that may be too soon is unknown",
            [_given("2025-12")],
            "unknown",
            "WARNING",
        ),
    ],
)
def test_course_interval_cases(
    case: str, given: list[dict[str, Any]], status: str, severity: str
) -> None:
    """Prior Lemtrada doses (never Campath or not-done) set the earliest start of the next
    course."""
    finding = _interval_finding(given, date(2026, 12, 7))
    assert (finding.status.value, finding.severity.name) == (status, severity)
