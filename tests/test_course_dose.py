"""The dose check reads the whole course: EHRs often draft one alemtuzumab order per infusion day,
and all alemtuzumab orders under review are one course (T0 = the earliest start).

Each row is a course as the prescriber drafted it (one line per order: start day, days, mg),
the prior courses on file, and what the dose check must say about it.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

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


ROWS = [
    pytest.param(
        _daily("2026-12-07", 5),
        [],
        "met",
        "INFO",
        "12 mg IV daily for 5 days, as for the first course",
        id="five one-day 12 mg orders on consecutive days are a complete first course",
    ),
    pytest.param(
        list(reversed(_daily("2026-12-07", 5))),
        [],
        "met",
        "INFO",
        "12 mg IV daily for 5 days, as for the first course",
        id="the same five orders drafted last day first are the same course",
    ),
    pytest.param(
        _daily("2026-12-07", 4),
        [],
        "not-met",
        "WARNING",
        "4 days (4 orders, 2026-12-07 to 2026-12-10); the first course is 5 consecutive days",
        id="four one-day orders are a first course one day short",
    ),
    pytest.param(
        _daily("2026-12-07", 3),
        FIRST_COURSE_ON_FILE,
        "met",
        "INFO",
        "12 mg IV daily for 3 days, as for course 2",
        id="three one-day orders for a later course are complete",
    ),
    pytest.param(
        _daily("2026-12-07", 5),
        FIRST_COURSE_ON_FILE,
        "not-met",
        "WARNING",
        "5 days (5 orders, 2026-12-07 to 2026-12-11); course 2 is 3 consecutive days",
        id="five one-day orders for a later course are two days too many",
    ),
    pytest.param(
        [*_daily("2026-12-07", 5), _order("2026-12-08", number=1)],
        [],
        "not-met",
        "WARNING",
        "the same infusion day in two orders: 2026-12-08",
        id="a day ordered twice is a finding even when the five days are all there",
    ),
    pytest.param(
        [
            _order(day)
            for day in ("2026-12-07", "2026-12-08", "2026-12-09", "2026-12-11", "2026-12-12")
        ],
        [],
        "not-met",
        "WARNING",
        "the days are not consecutive: no infusion on 2026-12-10",
        id="five one-day orders with a day skipped are not consecutive",
    ),
    pytest.param(
        [_order("2026-12-07", days=2), _order("2026-12-09", days=3)],
        [],
        "met",
        "INFO",
        "12 mg IV daily for 5 days, as for the first course",
        id="a two-day and a three-day order that follow each other are a complete first course",
    ),
    pytest.param(
        [*_daily("2026-12-07", 2), _order("2026-12-09", mg=10), *_daily("2026-12-10", 2)],
        [],
        "not-met",
        "CRITICAL",
        "2026-12-09: dose 10 mg, not 12 mg per day",
        id="one order of the course with 10 mg is a wrong dose on that day",
    ),
    pytest.param(
        [_order("2026-12-07", days=5)],
        [],
        "met",
        "INFO",
        "12 mg IV daily for 5 days, as for the first course",
        id="one five-day order is a complete first course, as before",
    ),
    pytest.param(
        [_order("2026-12-07", days=1)],
        [],
        "not-met",
        "WARNING",
        "1 day (count 1); the first course is 5 consecutive days",
        id="a single one-day order alone is a first course four days short",
    ),
]


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
