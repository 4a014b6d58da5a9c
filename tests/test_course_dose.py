"""The dose check reads the whole course: EHRs often draft one alemtuzumab order per infusion day,
and all alemtuzumab orders under review are one course (T0 = the earliest start).

Each row is a course as the prescriber drafted it (one line per order: start day, days, mg),
the prior courses on file, and what the dose check must say about it.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from fixture_requests import SERVICE_URL, fixture_request

from cds_service.cards import worded
from cds_service.domain.orders import AlemtuzumabOrder, OrderContext, course_start
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules.order import check_dose, check_herpes_prophylaxis

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LEMTRADA = "1594663"
IV = {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}], "text": "IV"}
T0 = date(2026, 12, 7)


def _order(start: str, days: int = 1, mg: float = 12, number: int = 0) -> dict[str, Any]:
    """A Lemtrada order: `mg` IV once daily for `days` days from `start`."""
    first = date.fromisoformat(start)
    return {
        "resourceType": "MedicationRequest",
        "id": f"lemtrada-{number}-{start}",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": LEMTRADA}]},
        "subject": {"reference": "Patient/p1"},
        "dosageInstruction": [
            {
                "route": IV,
                "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "code": "mg"}}],
                "timing": {
                    "repeat": {
                        "count": days,
                        "frequency": 1,
                        "period": 1,
                        "periodUnit": "d",
                        "boundsPeriod": {
                            "start": first.isoformat(),
                            "end": (first + timedelta(days=days - 1)).isoformat(),
                        },
                    }
                },
            }
        ],
    }


def _daily(first: str, count: int) -> list[dict[str, Any]]:
    """`count` one-day 12 mg orders on consecutive days from `first`."""
    start = date.fromisoformat(first)
    return [_order((start + timedelta(days=i)).isoformat()) for i in range(count)]


def _given(day: str) -> dict[str, Any]:
    """A completed Lemtrada infusion on file."""
    return {
        "resourceType": "MedicationAdministration",
        "id": f"given-{day}",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": LEMTRADA}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": day,
    }


FIRST_COURSE_ON_FILE = [_given(f"2025-10-0{day}") for day in range(1, 6)]
"""Five infusions 14 months before T0: the course under review is course 2 (3 days)."""


def _context(orders: list[dict[str, Any]]) -> OrderContext:
    course = tuple(AlemtuzumabOrder(o, "test", ()) for o in orders)
    order, t0, source = course_start(course, T0)
    return OrderContext("order-select", order, t0, source, tuple(orders), course)


def _record(given: list[dict[str, Any]]) -> PatientRecord:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in given],
    }
    return PatientRecord.build("p1", [bundle])


NONE: list[dict[str, Any]] = []
"""No alemtuzumab on file: the course under review is the first (5 days)."""
SKIPPING_DAY_4 = [_order(f"2026-12-{day:02}") for day in (7, 8, 9, 11, 12)]
WRONG_DOSE_ON_DAY_3 = [
    *_daily("2026-12-07", 2),
    _order("2026-12-09", mg=10),
    *_daily("2026-12-10", 2),
]

# fmt: off
ROWS = [
    # the course as drafted, prior courses on file, dose check status and severity, what it says
    pytest.param(_daily("2026-12-07", 5), NONE, "met", "INFO",
                 "12 mg IV daily for 5 days, as for the first course",
                 id="five one-day 12 mg orders on consecutive days are a complete first course"),
    pytest.param(list(reversed(_daily("2026-12-07", 5))), NONE, "met", "INFO",
                 "12 mg IV daily for 5 days, as for the first course",
                 id="the same five orders drafted last day first are the same course"),
    pytest.param(_daily("2026-12-07", 4), NONE, "not-met", "WARNING",
                 "4 days (4 orders, 2026-12-07 to 2026-12-10); the first course is 5",
                 id="four one-day orders are a first course one day short"),
    pytest.param(_daily("2026-12-07", 3), FIRST_COURSE_ON_FILE, "met", "INFO",
                 "12 mg IV daily for 3 days, as for course 2",
                 id="three one-day orders for a later course are complete"),
    pytest.param(_daily("2026-12-07", 5), FIRST_COURSE_ON_FILE, "not-met", "WARNING",
                 "5 days (5 orders, 2026-12-07 to 2026-12-11); course 2 is 3 consecutive days",
                 id="five one-day orders for a later course are two days too many"),
    pytest.param([*_daily("2026-12-07", 5), _order("2026-12-08", number=1)], NONE, "not-met",
                 "WARNING", "the same infusion day in two orders: 2026-12-08",
                 id="a day ordered twice is a finding even when the five days are all there"),
    pytest.param(SKIPPING_DAY_4, NONE, "not-met", "WARNING",
                 "the days are not consecutive: no infusion on 2026-12-10",
                 id="five one-day orders with a day skipped are not consecutive"),
    pytest.param([_order("2026-12-07", days=2), _order("2026-12-09", days=3)], NONE, "met",
                 "INFO", "12 mg IV daily for 5 days, as for the first course",
                 id="a two-day and a three-day order that follow each other are a first course"),
    pytest.param(WRONG_DOSE_ON_DAY_3, NONE, "not-met", "CRITICAL",
                 "2026-12-09: dose 10 mg, not 12 mg per day",
                 id="one order of the course with 10 mg is a wrong dose on that day"),
    pytest.param([_order("2026-12-07", days=5)], NONE, "met", "INFO",
                 "12 mg IV daily for 5 days, as for the first course",
                 id="one five-day order is a complete first course, as before"),
    pytest.param([_order("2026-12-07", days=1)], NONE, "not-met", "WARNING",
                 "1 day (count 1); the first course is 5 consecutive days",
                 id="a single one-day order alone is a first course four days short"),
]
# fmt: on


@pytest.mark.parametrize(("orders", "given", "status", "severity", "says"), ROWS)
def test_the_dose_check_reads_every_order_of_the_course(
    orders: list[dict[str, Any]], given: list[dict[str, Any]], status: str, severity: str, says: str
) -> None:
    policy = load_policy()
    finding = worded(check_dose(_record(given), _context(orders), policy), policy)
    assert (finding.status.value, finding.severity.name) == (status.replace("-", " "), severity)
    assert says in finding.headline + " " + " ".join(e.text for e in finding.evidence)


def test_an_order_without_a_start_date_leaves_the_course_days_unknown() -> None:
    """Several orders can only be placed on the calendar by their start dates."""
    undated = _order("2026-12-11", number=9)
    del undated["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]
    policy = load_policy()
    finding = worded(
        check_dose(_record([]), _context([*_daily("2026-12-07", 4), undated]), policy), policy
    )
    assert (finding.status.value, finding.severity.name) == ("unknown", "WARNING")
    assert "cannot be placed" in finding.headline


def test_herpes_prophylaxis_counts_from_the_last_day_of_the_whole_course() -> None:
    """Five one-day orders end on day 5: prophylaxis must run 2 months after it, not after
    day 1."""
    context = _context(_daily("2026-12-07", 5))
    policy = load_policy()
    finding = worded(check_herpes_prophylaxis(_record([]), context, policy), policy)
    acyclovir = finding.suggestions[0]
    assert "to 2027-02-11" in acyclovir.label


FIVE_ORDERS = "first_course_drafted_as_five_one_day_orders"
DAY = "MedicationRequest/lemtrada-infusion-day-{}"


def _selecting(days: list[int], drafted: list[int]) -> dict[str, Any]:
    """The five one-day orders' request at order-select, with only the orders of `drafted` in
    draftOrders and those of `days` selected."""
    request = fixture_request(FIVE_ORDERS)
    entries = request["context"]["draftOrders"]["entry"]
    wanted = {DAY.format(day) for day in drafted}
    request["context"]["draftOrders"]["entry"] = [
        e for e in entries if f"MedicationRequest/{e['resource']['id']}" in wanted
    ]
    request["context"]["selections"] = [DAY.format(day) for day in days]
    return request


@pytest.mark.parametrize(
    ("selected", "drafted", "dose", "start"),
    [
        pytest.param([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], "met", "2026-12-07", id="all five selected"),
        pytest.param(
            [5],
            [1, 2, 3, 4, 5],
            "met",
            "2026-12-07",
            id="the fifth selected, the four others drafted before: one course of five days",
        ),
        pytest.param(
            [5],
            [5],
            "not-met",
            "2026-12-11",
            id="the fifth alone drafted and selected: a course of one day",
        ),
    ],
)
def test_order_select_reads_the_course_already_drafted(
    client: Any, selected: list[int], drafted: list[int], dose: str, start: str
) -> None:
    """Orders of one course are often selected one at a time: the Lemtrada orders drafted before
    belong to the course of the one selected."""
    response = client.post(SERVICE_URL["order-select"], json=_selecting(selected, drafted))
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    cards = response.get_json()["cards"]
    summary = next(c for c in cards if c["source"]["topic"]["code"] == "eligibility-summary")
    checks = summary["extension"]["org.example.cds-service.checklist"]["checks"]
    assert next(c for c in checks if c["topic"] == "dose")["status"] == dose
    assert f"Planned first infusion: {start}" in summary["detail"]


def test_lemtrada_orders_drafted_before_are_not_reviewed_when_nothing_selected_is_lemtrada(
    client: Any,
) -> None:
    """Selecting another order (here: none of the Lemtrada ones) does not review the Lemtrada
    orders drafted before: they join a course only once a Lemtrada order is selected."""
    request = _selecting([], [1, 2, 3, 4, 5])
    response = client.post(SERVICE_URL["order-select"], json=request)
    assert response.status_code == 200
    assert response.get_json()["cards"] == []
