"""Reading a course of alemtuzumab: prior courses from the record, and the dose, route and days
of a MedicationRequest's dosage instructions.

Shared by the order rules (course interval, dose, premedication, herpes prophylaxis). Everything
here reads raw JSON tolerantly: a shape it cannot read is reported, never taken as an all-clear.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from .. import orderables
from ..fhirdata import (
    SNOMED,
    DateSpan,
    Malformed,
    codings,
    concept_words,
    first_date,
    parse_date,
    reference_of,
)
from ..findings import Evidence
from ..orders import OrderContext, Product, classify
from ..record import PatientRecord, Unreadable, dosage_starts, name_medication

IV_ROUTE = orderables.code("intravenous")
IV_WORDS = re.compile(r"\bintraven|\bi\.?v(?:pb)?\b", re.IGNORECASE)
PUSH_WORDS = re.compile(r"\bpush\b|\bbolus\b", re.IGNORECASE)
LEMTRADA_MG_PER_ML = 10
"""Lemtrada is supplied only as 12 mg/1.2 mL (10 mg/mL), so a dose in mL converts exactly (PI 3)."""
UNIT_TO_MG = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001}
DAY_UNITS = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7}
DONE = {
    "MedicationAdministration": {"completed"},
    "MedicationStatement": {"completed"},
    "MedicationRequest": {"completed"},
}


# -- prior courses -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dose:
    """One recorded alemtuzumab administration (or a completed course recorded as one span)."""

    first: date
    last: date
    """The latest day it may have been given (a partial date counts to its end)."""
    reference: str
    how: str
    last_earliest: date | None = None
    """The earliest day the last dose may have been given, when the date is partial."""

    def __str__(self) -> str:
        span = f"{self.first}" if self.first == self.last else f"{self.first} to {self.last}"
        return span  # the resource stays in the checklist extension, not in the card


@dataclass
class Course:
    """Administrations within the grouping gap of each other: one treatment course."""

    doses: list[Dose] = field(default_factory=list)

    @property
    def first(self) -> date:
        return min(d.first for d in self.doses)

    @property
    def last(self) -> date:
        return max(d.last for d in self.doses)

    @property
    def last_certain(self) -> date:
        """The last dose day the record proves (partial dates count from their start)."""
        return max(d.last_earliest or d.last for d in self.doses)


@dataclass
class History:
    """Prior courses before T0, and alemtuzumab records whose dates could not be read."""

    courses: list[Course]
    unreadable: list[Unreadable]

    @property
    def number(self) -> int:
        """Course number of the order under review."""
        return len(self.courses) + 1


def _dose_span(resource: dict[str, Any]) -> tuple[DateSpan, DateSpan] | None:
    """(first day, last day) an administration record covers, or None when undated."""
    rtype = resource.get("resourceType")
    if rtype == "MedicationRequest":
        spans = _bounds(resource)
        if spans is not None:
            return spans
        authored = parse_date(resource.get("authoredOn"))
        return (authored, authored) if authored else None
    start = first_date(resource, "effectiveDateTime", "effectivePeriod.start")
    if start is None:
        return None
    end = first_date(resource, "effectivePeriod.end") or start
    return start, end


def _bounds(request: dict[str, Any]) -> tuple[DateSpan, DateSpan] | None:
    """First and last day of a request's first dosage boundsPeriod (end from count if missing)."""
    for dosage in _dosages(request):
        repeat = _repeat(dosage)
        bounds = repeat.get("boundsPeriod")
        if not isinstance(bounds, dict):
            continue
        start = parse_date(bounds.get("start"))
        if start is None:
            continue
        end = parse_date(bounds.get("end"))
        if end is None:
            count = repeat.get("count")
            days = count - 1 if isinstance(count, int) and count > 0 else 0
            end = DateSpan(
                start.earliest + timedelta(days=days), start.latest + timedelta(days=days)
            )
        return start, end
    return None


def lemtrada_doses(
    record: PatientRecord, before: date, exclude_id: object = None
) -> tuple[list[Dose], list[Unreadable]]:
    """Completed Lemtrada administrations that began before `before` (never Campath, never the
    request `exclude_id`: the order under review), with the alemtuzumab records whose dates could
    not be read. Shared by the course-interval check and patient-view monitoring, so both read
    the infusion history the same way."""
    doses: list[Dose] = []
    unreadable: list[Unreadable] = []
    uses, bad = record.medication_uses()
    for use in uses:
        resource = use.resource
        if use.status not in DONE.get(use.resource_type, set()):
            continue
        if (
            use.resource_type == "MedicationRequest"
            and exclude_id
            and (resource.get("id") == exclude_id)
        ):
            continue
        if classify(use.codes, use.words) is not Product.LEMTRADA:
            continue
        problem = record.problem(resource)
        if problem is not None:
            unreadable.append(Unreadable(reference_of(resource), problem))
            continue
        span = _dose_span(resource)
        if span is None:
            unreadable.append(
                Unreadable(reference_of(resource), "alemtuzumab given, date not readable")
            )
            continue
        first, last = span
        if not (first.exact and last.exact):
            unreadable.append(
                Unreadable(
                    reference_of(resource), f"alemtuzumab given {first}, exact day not recorded"
                )
            )
            if first.earliest >= before:
                continue
            doses.append(
                Dose(
                    first.earliest,
                    min(last.latest, before - timedelta(days=1)),
                    reference_of(resource),
                    f"{use.resource_type} {use.status}, partial date",
                    last_earliest=last.earliest,
                )
            )
            continue
        if first.earliest >= before:
            continue  # on or after the planned start: not a prior course
        doses.append(
            Dose(
                first.earliest,
                last.latest,
                reference_of(resource),
                f"{use.resource_type} {use.status}",
            )
        )
    # Records whose medication could not be read at all might be alemtuzumab.
    unreadable.extend(u for u in bad if u.reference.startswith("MedicationAdministration"))
    return doses, unreadable


def group_courses(doses: list[Dose], gap_days: int) -> list[Course]:
    """Doses grouped into courses, oldest first: a dose more than `gap_days` after the previous
    one starts a new course."""
    courses: list[Course] = []
    for dose in sorted(doses, key=lambda d: (d.first, d.last)):
        if courses and (dose.first - courses[-1].last).days <= gap_days:
            courses[-1].doses.append(dose)
        else:
            courses.append(Course([dose]))
    return courses


def prior_courses(record: PatientRecord, order: OrderContext, gap_days: int) -> History:
    """Completed Lemtrada administrations before T0 (never Campath, never the order itself),
    grouped into courses: a dose more than `gap_days` after the previous one starts a new course."""
    own_id = order.order.request.get("id")
    doses, unreadable = lemtrada_doses(record, order.t0, own_id)
    return History(group_courses(doses, gap_days), unreadable)


# -- reading a dosage instruction ------------------------------------------------------------


def _dosages(request: dict[str, Any]) -> list[dict[str, Any]]:
    dosages = request.get("dosageInstruction")
    return [d for d in dosages if isinstance(d, dict)] if isinstance(dosages, list) else []


def _repeat(dosage: dict[str, Any]) -> dict[str, Any]:
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    return repeat if isinstance(repeat, dict) else {}


def dose_mg(dosage: dict[str, Any], mg_per_ml: int | None = None) -> tuple[float | None, str]:
    """The dose of one dosage instruction in mg, and how it was written ('' when absent).

    None with a description when a dose is written in a unit that cannot be converted."""
    entries = dosage.get("doseAndRate")
    if not isinstance(entries, list):
        return None, ""
    for entry in entries:
        quantity = entry.get("doseQuantity") if isinstance(entry, dict) else None
        if not isinstance(quantity, dict):
            if isinstance(entry, dict) and entry.get("doseRange") is not None:
                return None, "a dose range"
            continue
        value = quantity.get("value")
        unit = quantity.get("code") or quantity.get("unit")
        # UCUM annotations read as words: "1 {pill}" is written "1 pill".
        written = f"{value} {quantity.get('unit') or unit or '(no unit)'}".replace("{", "")
        written = written.replace("}", "")
        if not isinstance(value, (int, float)) or not isinstance(unit, str):
            return None, written
        unit = unit.strip().lower()
        if unit in UNIT_TO_MG:
            return float(value) * UNIT_TO_MG[unit], written
        if unit in ("ml", "milliliter") and mg_per_ml is not None:
            return float(value) * mg_per_ml, f"{written} of {mg_per_ml} mg/mL"
        return None, written
    return None, ""


@dataclass(frozen=True)
class Route:
    """What a dosage's route says: IV, another route, or nothing readable."""

    iv: bool | None
    """True IV, False another route, None not stated or not recognisable."""
    written: str
    push: bool = False


def route_of(dosage: dict[str, Any]) -> Route:
    """IV when coded SNOMED 47625008 or written 'intravenous'/'IV'; another SNOMED code or text is
    another route; a route with neither is not recognisable."""
    route = dosage.get("route")
    if not isinstance(route, dict):
        return Route(None, "")
    try:
        codes = codings(route)
    except Malformed:
        return Route(None, "unreadable route")
    words = concept_words(route)
    written = words or ", ".join(f"{s}|{c}" for s, c in codes)
    push = bool(PUSH_WORDS.search(words))
    if IV_ROUTE in codes or IV_WORDS.search(words):
        return Route(True, written, push)
    if words or any(system == SNOMED for system, _ in codes):
        return Route(False, written, push)
    return Route(None, written, push)


How = tuple[Evidence, ...]
"""How the days were read, as evidence parts (kinds timing-* in wording.toml)."""


def course_days(dosage: dict[str, Any]) -> tuple[int | None, How]:
    """Days in a course from timing.repeat: count (once daily), boundsPeriod (inclusive) or
    boundsDuration; None with the reason when absent or contradictory."""
    repeat = _repeat(dosage)
    found: list[tuple[int, Evidence]] = []
    count, frequency = repeat.get("count"), repeat.get("frequency", 1)
    if isinstance(count, int) and isinstance(frequency, int) and frequency >= 1:
        found.append((count // frequency, Evidence("timing-count", {"count": count})))
    bounds = repeat.get("boundsPeriod")
    if isinstance(bounds, dict):
        start, end = parse_date(bounds.get("start")), parse_date(bounds.get("end"))
        if start and end and start.exact and end.exact:
            found.append(
                (
                    (end.earliest - start.earliest).days + 1,
                    Evidence("timing-period", {"start": str(start), "end": str(end)}),
                )
            )
    duration = repeat.get("boundsDuration")
    if isinstance(duration, dict) and isinstance(duration.get("value"), (int, float)):
        unit = str(duration.get("code") or duration.get("unit") or "").lower()
        if unit in DAY_UNITS:
            found.append(
                (
                    int(duration["value"] * DAY_UNITS[unit]),
                    Evidence("timing-duration", {"value": str(duration["value"]), "unit": unit}),
                )
            )
    if not found:
        return None, (Evidence("timing-missing"),)
    if len({days for days, _ in found}) > 1:
        return None, (
            Evidence(
                "timing-contradictory",
                {
                    "readings": tuple(
                        Evidence("timing-reading", {"how": (how,), "days": d}) for d, how in found
                    )
                },
            ),
        )
    return found[0][0], (found[0][1],)


def order_days(request: dict[str, Any]) -> tuple[int | None, How]:
    """Total days of a course over all dosage instructions (None when any is unreadable)."""
    dosages = _dosages(request)
    if not dosages:
        return None, (Evidence("no-dosage-instruction"),)
    total, how = 0, list[Evidence]()
    for dosage in dosages:
        days, why = course_days(dosage)
        if days is None:
            return None, why
        total += days
        how.extend(why)
    return total, tuple(how)


@dataclass(frozen=True)
class CourseDays:
    """The infusion days of a course drafted as one order or several (one per day, say)."""

    days: int | None
    """Distinct infusion days; None when an order's days cannot be read or placed."""
    how: How
    repeated: tuple[date, ...] = ()
    """Days that two orders of the course both cover."""
    skipped: tuple[date, ...] = ()
    """Days between the first and the last infusion that no order covers."""
    last: date | None = None
    """The last infusion day (None when it cannot be placed)."""


def course_infusion_days(requests: Sequence[dict[str, Any]]) -> CourseDays:
    """The days of the whole course: one order's days as it states them; several orders' days
    placed on the calendar from each order's start, so repeated and skipped days show."""
    if len(requests) == 1:
        days, how = order_days(requests[0])
        starts = dosage_starts(requests[0])
        last = (
            min(s.earliest for s in starts) + timedelta(days=days - 1) if days and starts else None
        )
        return CourseDays(days, how, last=last)
    dates: list[date] = []
    for request in requests:
        days, how = order_days(request)
        if days is None:
            return CourseDays(None, how)
        starts = [s for s in dosage_starts(request) if s.exact]
        if not starts:
            return CourseDays(None, (Evidence("timing-order-no-start"),))
        first = min(s.earliest for s in starts)
        dates.extend(first + timedelta(days=i) for i in range(days))
    placed = sorted(set(dates))
    repeated = tuple(sorted({d for d in dates if dates.count(d) > 1}))
    span = (placed[-1] - placed[0]).days + 1
    skipped = tuple(
        d for d in (placed[0] + timedelta(days=i) for i in range(span)) if d not in placed
    )
    how = (
        Evidence(
            "timing-orders",
            {"orders": len(requests), "first": str(placed[0]), "last": str(placed[-1])},
        ),
    )
    return CourseDays(len(placed), how, repeated, skipped, placed[-1])


def dosage_list(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The dosage instructions of a request that are JSON objects."""
    return _dosages(request)


# -- the other draft orders ------------------------------------------------------------------


def other_drafts(order: OrderContext) -> list[dict[str, Any]]:
    """Draft MedicationRequests signed with the alemtuzumab order (not the order itself)."""
    own = order.order.request
    return [
        r
        for r in order.draft_orders
        if r.get("resourceType") == "MedicationRequest"
        and r is not own
        and r.get("id") != own.get("id")
        and r.get("status") not in ("cancelled", "entered-in-error", "revoked")
    ]


def draft_medication(
    request: dict[str, Any], drafts: tuple[dict[str, Any], ...]
) -> tuple[list[Any], str]:
    """Codes and words of a draft order's medication: inline, contained or in the draft Bundle."""
    named = name_medication(request, (drafts,))
    return list(named.codes), named.words


def covered_days(request: dict[str, Any]) -> tuple[date | None, date | None]:
    """(first, last) day a draft order's dosage covers; last is None when open-ended."""
    first: date | None = None
    last: date | None = None
    open_ended = False
    for dosage in _dosages(request):
        timing = dosage.get("timing")
        events = timing.get("event") if isinstance(timing, dict) else None
        if isinstance(events, list):
            days = [s.earliest for s in map(parse_date, events) if s is not None and s.exact]
            if days:
                first = min(filter(None, (first, min(days))))
                last = max(filter(None, (last, max(days))))
        span = _bounds_only(dosage)
        if span is not None:
            start, end = span
            first = min(filter(None, (first, start)))
            if end is None:
                open_ended = True
            else:
                last = max(filter(None, (last, end)))
    return first, None if open_ended else last


def _bounds_only(dosage: dict[str, Any]) -> tuple[date, date | None] | None:
    repeat = _repeat(dosage)
    bounds = repeat.get("boundsPeriod")
    if not isinstance(bounds, dict):
        return None
    start = parse_date(bounds.get("start"))
    if start is None or not start.exact:
        return None
    end = parse_date(bounds.get("end"))
    if end is not None:
        return start.earliest, end.latest
    count, frequency = repeat.get("count"), repeat.get("frequency", 1)
    if isinstance(count, int) and isinstance(frequency, int) and frequency >= 1 and count >= 1:
        return start.earliest, start.earliest + timedelta(days=max(count // frequency, 1) - 1)
    duration = repeat.get("boundsDuration")
    if isinstance(duration, dict) and isinstance(duration.get("value"), (int, float)):
        unit = str(duration.get("code") or duration.get("unit") or "").lower()
        if unit in DAY_UNITS:
            days = int(duration["value"] * DAY_UNITS[unit])
            return start.earliest, start.earliest + timedelta(days=days - 1)
    return start.earliest, None
