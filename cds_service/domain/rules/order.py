"""Checks of the order itself: course interval, dose, premedication, prophylaxis (issue #4).

The course number comes from the record (prior completed alemtuzumab administrations grouped into
courses); the dose, route and days from the dosage instructions of every alemtuzumab order of the
course under review (one order per infusion day, say); premedication and herpes
prophylaxis from the other draft orders signed with it (order-sign only: at order-select the
clinician has not written them yet).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from .. import orderables
from ..fhirdata import Malformed, add_months, parse_date, reference_of
from ..findings import Evidence, Finding, Severity, Status, Suggestion
from ..orders import OrderContext, planned_start
from ..policy import Policy
from ..record import PatientRecord
from ..terminology import value_set
from .base import ORDER_SIGN, Rule
from .course import (
    LEMTRADA_MG_PER_ML,
    History,
    course_infusion_days,
    covered_days,
    dosage_list,
    dose_mg,
    draft_medication,
    other_drafts,
    prior_courses,
    route_of,
)

COURSE_INTERVAL = "course-interval"
DOSE = "dose"
PREMEDICATION = "premedication"
HERPES_PROPHYLAXIS = "herpes-prophylaxis"
UCUM = "http://unitsofmeasure.org"
ACYCLOVIR_DOSE = 400
"""mg twice daily by mouth: the suggested herpes prophylaxis (the label fixes no dose)."""


def _history(record: PatientRecord, order: OrderContext, policy: Policy) -> History:
    return prior_courses(record, order, policy["course_grouping_gap"])


def _expected_days(history: History, policy: Policy) -> int:
    return policy["first_course_days"] if history.number == 1 else policy["later_course_days"]


def _course_lines(history: History) -> list[Evidence]:
    return [
        Evidence(
            "course",
            {
                "number": i,
                "first": str(c.first),
                "last": str(c.last),
                "doses": "; ".join(str(d) for d in c.doses),
            },
        )
        for i, c in enumerate(history.courses, start=1)
    ]


# -- course interval ---------------------------------------------------------------------------


def check_course_interval(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical when a new course starts less than the interval after the prior course's last
    dose."""
    topic, months = COURSE_INTERVAL, policy["course_interval"]
    history = _history(record, order, policy)
    evidence = tuple(_course_lines(history))
    unreadable = tuple(history.unreadable)
    if not history.courses:
        return Finding(
            topic, Status.MET, Severity.INFO, reason="first-course", unreadable=unreadable
        )
    last = history.courses[-1].last
    allowed = add_months(last, months)
    if order.t0 < allowed and order.t0 >= add_months(history.courses[-1].last_certain, months):
        return Finding(
            topic,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="partly-dated",
            facts={"latest_allowed_dose": add_months(order.t0, -months).isoformat()},
            evidence=evidence,
            unreadable=unreadable,
        )
    if order.t0 < allowed:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="too-soon",
            facts={
                "course": history.number,
                "days": (order.t0 - last).days,
                "last_dose": last.isoformat(),
                "allowed_start": allowed.isoformat(),
                "t0": order.t0.isoformat(),
            },
            evidence=evidence,
            unreadable=unreadable,
        )
    return Finding(
        topic,
        Status.MET,
        Severity.INFO,
        reason="interval-kept",
        facts={"course": history.number, "last_dose": last.isoformat()},
        evidence=evidence,
        unreadable=unreadable,
    )


COURSE_INTERVAL_RULE = Rule(
    topic=COURSE_INTERVAL,
    title="At least {course_interval} months since the last course",
    logic="Completed alemtuzumab (not Campath) MedicationAdministration/Statement/Request "
    "before T0, grouped into courses (doses at most the grouping gap apart); course number = "
    "prior courses + 1; a start less than the interval after the last dose of the prior course "
    "-> critical with the earliest allowed start; undated or partially dated doses -> warning.",
    indicator="critical",
    source="label",
    citation="PI section 2 (Recommended Dosage: later courses at least 12 months after the "
    "last dose of any prior course)",
    check=check_course_interval,
    value_sets=("alemtuzumab-lemtrada-rxnorm", "campath-rxnorm"),
    policy_keys=("course_interval", "course_grouping_gap"),
    override_reasons=("recipient-disagrees-evidence", "risk-benefit-ratio"),
)


# -- dose, route and days -----------------------------------------------------------------------


def _add(found: list[Evidence], item: Evidence) -> None:
    """Add an evidence line once (orders of one course often repeat the same dosage)."""
    if item not in found:
        found.append(item)


def check_dose(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical for a dose other than 12 mg/day or a non-IV route; warning for unstated ones and
    for a course length other than 5 (first course) or 3 (later) days. All alemtuzumab orders
    under review are one course: every order's dosages are read, and their days together make
    the course (a day ordered twice or skipped is a warning too)."""
    topic, daily = DOSE, policy["daily_dose"]
    requests = [o.request for o in order.course_orders]
    critical: list[Evidence] = []
    warnings: list[Evidence] = []
    evidence: list[Evidence] = []
    dosages = [
        (request, i, dosage)
        for request in requests
        for i, dosage in enumerate(dosage_list(request), start=1)
    ]
    if not dosages:
        warnings.append(Evidence("no-dosage"))
    for request, i, dosage in dosages:
        # Where a problem is: the order's start when the course has several orders, the
        # dosage's number when its order has several dosages.
        where = f"{planned_start(request, order.t0)[0]}: " if len(requests) > 1 else ""
        where += f"dosage {i}: " if len(dosage_list(request)) > 1 else ""
        mg, written = dose_mg(dosage, LEMTRADA_MG_PER_ML)
        facts: dict[str, str | int] = {"where": where, "written": written}
        if mg is None:
            _add(warnings, Evidence("dose-unreadable" if written else "dose-not-stated", facts))
        elif abs(mg - daily) > 1e-6:
            critical.append(
                Evidence(
                    "dose-wrong" if written == f"{mg:g} mg" else "dose-wrong-converted",
                    {**facts, "mg": f"{mg:g}"},
                )
            )
        else:
            _add(evidence, Evidence("dose-as-labelled", {**facts, "where": ""}))
        route = route_of(dosage)
        facts = {"where": where, "route": route.written}
        if route.iv is None:
            _add(
                warnings,
                Evidence("route-unrecognised" if route.written else "route-not-stated", facts),
            )
        elif not route.iv:
            critical.append(Evidence("route-not-iv", facts))
        elif route.push:
            critical.append(Evidence("route-push", facts))
        else:
            _add(evidence, Evidence("route-iv", {**facts, "where": ""}))
    history = _history(record, order, policy)
    expected = _expected_days(history, policy)
    placed = course_infusion_days(requests)
    days, how = placed.days, placed.how
    course = (
        (Evidence("first-course"),)
        if history.number == 1
        else (Evidence("later-course", {"number": history.number}),)
    )
    timing: dict[str, str | int | tuple[Evidence, ...]] = {
        "days": days or 0,
        "how": how,
        "course": course,
        "expected": expected,
    }
    if placed.repeated:
        warnings.append(Evidence("days-repeated", {"dates": _dates(placed.repeated)}))
    if placed.skipped:
        warnings.append(Evidence("days-skipped", {"dates": _dates(placed.skipped)}))
    if dosages and days is None:
        warnings.append(Evidence("days-unreadable", timing))
    elif days is not None and days != expected:
        warnings.append(Evidence("days-wrong-one" if days == 1 else "days-wrong", timing))
    elif days is not None:
        evidence.append(Evidence("days-as-labelled", timing))
    misread = placed.repeated or placed.skipped or (days is not None and days != expected)
    # The headline names the first problem: the first evidence line ({first_evidence}).
    if critical:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="problem",
            facts={"mg_per_ml": LEMTRADA_MG_PER_ML},
            evidence=tuple(critical + warnings + evidence),
        )
    if warnings:
        status = Status.NOT_MET if misread else Status.UNKNOWN
        return Finding(
            topic,
            status,
            Severity.WARNING,
            reason="problem",
            facts={"mg_per_ml": LEMTRADA_MG_PER_ML},
            evidence=tuple(warnings + evidence),
        )
    return Finding(
        topic,
        Status.MET,
        Severity.INFO,
        reason="as-labelled",
        facts={"days": days or 0, "course": course},
        evidence=tuple(evidence),
    )


def _dates(days: tuple[date, ...]) -> str:
    return ", ".join(day.isoformat() for day in days)


DOSE_RULE = Rule(
    topic=DOSE,
    title="Dose, route and days of the course",
    logic="All alemtuzumab orders under review are one course. Every dosage of every order: "
    "dose other than the daily dose (mg, g, or mL read at 10 mg/mL) or a route other than IV "
    "(SNOMED 47625008 or 'intravenous'/'IV' in text), or IV push/bolus -> critical; dose or "
    "route missing or unreadable -> warning; days (count, boundsPeriod inclusive or "
    "boundsDuration; several orders placed on the calendar from each one's start) other than 5 "
    "for course 1 or 3 for later courses, a day two orders both cover, or a day skipped "
    "between the first and the last -> warning.",
    indicator="critical / warning",
    source="label",
    citation="PI section 2 (Recommended Dosage: 12 mg/day IV over 4 hours; 5 consecutive days, "
    "then 3 consecutive days; do not give as IV push or bolus)",
    check=check_dose,
    value_sets=("alemtuzumab-lemtrada-rxnorm", "campath-rxnorm"),
    policy_keys=("daily_dose", "first_course_days", "later_course_days"),
    override_reasons=("recipient-disagrees-evidence", "expert-contradicts"),
)


# -- premedication and herpes prophylaxis --------------------------------------------------------


def _candidates(order: OrderContext, vs_id: str) -> list[tuple[dict[str, Any], str]]:
    """(draft order, medication name) for the other draft orders whose drug is in a value set."""
    vs = value_set(vs_id)
    out = []
    for draft in other_drafts(order):
        try:
            codes, words = draft_medication(draft, order.draft_orders)
        except Malformed:
            continue
        code = vs.matches_any(list(codes))
        named = None if code else vs.name_in(words)
        if code is None and named is None:
            continue
        name = vs.display(code) if code else f'"{named[0]}" (name in text)' if named else ""
        out.append((draft, name))
    return out


def _medication_suggestion(
    key: str, wording: str, dosage: dict[str, Any], **facts: str | int
) -> Suggestion:
    """A new MedicationRequest for the medication `key` of orderables.json (its RxNorm code);
    its label, reason and dosage text are [suggestion.<wording>] of wording.toml."""
    coding = orderables.coding(key)
    return Suggestion(
        key=key,
        label="",
        kind="medication",
        code=(coding["system"], coding["code"]),
        display=coding["display"],
        details={"dosage": dosage},
        wording=wording,
        facts=facts,
    )


def _route(key: str, text: str) -> dict[str, Any]:
    """A dosage route: the SNOMED CT coding of `key` in orderables.json, with the text shown."""
    return {"coding": [orderables.coding(key)], "text": text}


def _mg(value: int) -> list[dict[str, Any]]:
    return [{"doseQuantity": {"value": value, "unit": "mg", "system": UCUM, "code": "mg"}}]


def premedication_suggestion(t0: date, policy: Policy) -> Suggestion:
    """Methylprednisolone 1,000 mg IV once daily on days 1-3 of the course (a new order)."""
    days, dose = policy["premedication_days"], policy["premedication_dose"]
    end = t0 + timedelta(days=days - 1)
    dosage = {
        "sequence": 1,
        "timing": {
            "repeat": {
                "boundsPeriod": {"start": t0.isoformat(), "end": end.isoformat()},
                "count": days,
                "frequency": 1,
                "period": 1,
                "periodUnit": "d",
            }
        },
        "route": _route("intravenous", "IV"),
        "doseAndRate": _mg(dose),
    }
    return _medication_suggestion(
        "order-methylprednisolone",
        "methylprednisolone",
        dosage,
        start=t0.isoformat(),
        end=end.isoformat(),
    )


def check_premedication(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Among the other draft orders, methylprednisolone 1,000 mg IV covering days 1-3 of the
    course."""
    topic, days, dose = PREMEDICATION, policy["premedication_days"], policy["premedication_dose"]
    last_needed = order.t0 + timedelta(days=days - 1)
    methylpred = value_set("methylprednisolone-rxnorm")
    gaps: list[Evidence] = []
    for draft, name in _candidates(order, "corticosteroid-rxnorm"):
        ref = {"reference": reference_of(draft), "medication": name}
        short: list[Evidence] = []
        codes, words = draft_medication(draft, order.draft_orders)
        if methylpred.matches_any(list(codes)) is None and methylpred.name_in(words) is None:
            short.append(Evidence("premedication-not-methylprednisolone"))
        dosages = dosage_list(draft)
        doses = [mg for mg, _ in (dose_mg(d) for d in dosages) if mg is not None]
        if not doses:
            short.append(Evidence("premedication-dose-not-stated"))
        elif max(doses) < dose:
            short.append(Evidence("premedication-dose-low", {"mg": f"{max(doses):g}"}))
        routes = [route_of(d) for d in dosages]
        if not any(r.iv for r in routes):
            written = ", ".join(r.written for r in routes if r.written)
            short.append(
                Evidence(
                    "premedication-route-not-iv" if written else "premedication-route-not-stated",
                    {"route": written},
                )
            )
        first, last = covered_days(draft)
        if first is None:
            short.append(Evidence("premedication-no-start"))
        elif first > order.t0:
            short.append(
                Evidence("starts-after-day-1", {"start": str(first), "t0": order.t0.isoformat()})
            )
        elif last is not None and last < last_needed:
            short.append(
                Evidence(
                    "premedication-ends-early",
                    {"end": str(last), "last_day": last_needed.isoformat()},
                )
            )
        if not short:
            return Finding(
                topic,
                Status.MET,
                Severity.INFO,
                reason="ordered",
                facts={"medication": name},
                evidence=(Evidence("draft-order", ref),),
            )
        gaps.append(Evidence("draft-order-falls-short", {**ref, "problems": tuple(short)}))
    # The headline names the first order that falls short: the first evidence line.
    return Finding(
        topic,
        Status.NOT_MET,
        Severity.WARNING,
        reason="order-falls-short" if gaps else "not-ordered",
        facts={"t0": order.t0.isoformat(), "last_day": last_needed.isoformat()},
        evidence=tuple(gaps),
        suggestions=(premedication_suggestion(order.t0, policy),),
    )


PREMEDICATION_RULE = Rule(
    topic=PREMEDICATION,
    title="Corticosteroid premedication on days 1-{premedication_days}",
    logic="Order-sign only: among the other draft MedicationRequests, methylprednisolone "
    "(RxNorm or name) of at least the premedication dose, IV, from T0 through day 3; another "
    "corticosteroid asks to confirm equivalence; none -> warning with a methylprednisolone "
    "1,000 mg IV order for days 1-3.",
    indicator="warning",
    source="label",
    citation="PI section 2 (Recommended Premedication: 1,000 mg methylprednisolone or "
    "equivalent immediately before infusion on the first 3 days of each course)",
    check=check_premedication,
    value_sets=("corticosteroid-rxnorm", "methylprednisolone-rxnorm"),
    policy_keys=("premedication_dose", "premedication_days"),
    override_reasons=("indication-order-exists", "patient-contraindication", "policy-contradicts"),
    hooks=ORDER_SIGN,
)


def prophylaxis_suggestion(t0: date, until: date) -> Suggestion:
    """Acyclovir 400 mg by mouth twice daily from day 1 until the prophylaxis end (a new order).

    The label fixes no antiviral or dose; 400 mg twice daily is a common choice for the prescriber
    to confirm (RxNorm 197311, verified in rxnorm-dmt-codes.md)."""
    dose = ACYCLOVIR_DOSE
    dosage = {
        "sequence": 1,
        "timing": {
            "repeat": {
                "boundsPeriod": {"start": t0.isoformat(), "end": until.isoformat()},
                "frequency": 2,
                "period": 1,
                "periodUnit": "d",
            }
        },
        "route": _route("oral", "oral"),
        "doseAndRate": _mg(dose),
    }
    return _medication_suggestion(
        "order-acyclovir",
        "acyclovir",
        dosage,
        dose=dose,
        start=t0.isoformat(),
        end=until.isoformat(),
    )


def check_herpes_prophylaxis(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Among the other draft orders, an anti-herpes antiviral starting on or before day 1."""
    topic, months = HERPES_PROPHYLAXIS, policy["herpes_prophylaxis_months"]
    placed = course_infusion_days([o.request for o in order.course_orders])
    days = placed.days
    if days is None or days < 1:
        days = _expected_days(_history(record, order, policy), policy)
    last_infusion = max(filter(None, (order.t0 + timedelta(days=days - 1), placed.last)))
    until = add_months(last_infusion, months)
    minimum = last_infusion + timedelta(days=30 * months)  # "2 months" read as at least 60 days
    gaps: list[Evidence] = []
    for draft, name in _candidates(order, "herpes-antiviral-rxnorm"):
        ref = {"reference": reference_of(draft), "medication": name}
        first, last = covered_days(draft)
        how = "dosage timing"
        if first is None:
            authored = parse_date(draft.get("authoredOn"))
            first, how = (authored.latest, "date written") if authored else (None, "")
        short: list[Evidence] = []
        if first is None:
            short.append(Evidence("prophylaxis-no-start"))
        elif first > order.t0:
            short.append(
                Evidence("starts-after-day-1", {"start": str(first), "t0": order.t0.isoformat()})
            )
        if last is not None and last < minimum:
            short.append(
                Evidence(
                    "prophylaxis-ends-early", {"end": str(last), "minimum": minimum.isoformat()}
                )
            )
        if not short:
            return Finding(
                topic,
                Status.MET,
                Severity.INFO,
                reason="ordered",
                facts={"medication": name, "start": str(first)},
                evidence=(
                    Evidence(
                        "prophylaxis-ordered" if last else "prophylaxis-ordered-open",
                        {**ref, "start": str(first), "how": how, "end": str(last)},
                    ),
                ),
            )
        gaps.append(Evidence("draft-order-falls-short", {**ref, "problems": tuple(short)}))
    # The headline names the first order that falls short: the first evidence line.
    return Finding(
        topic,
        Status.NOT_MET,
        Severity.WARNING,
        reason="order-falls-short" if gaps else "not-ordered",
        facts={"t0": order.t0.isoformat(), "until": until.isoformat()},
        evidence=tuple(gaps),
        suggestions=(prophylaxis_suggestion(order.t0, until),),
    )


HERPES_PROPHYLAXIS_RULE = Rule(
    topic=HERPES_PROPHYLAXIS,
    title="Antiviral herpes prophylaxis from day 1",
    logic="Order-sign only: among the other draft MedicationRequests, acyclovir, valacyclovir "
    "or famciclovir (RxNorm or name) starting on or before T0 (dosage start, else authoredOn) "
    "and not ending earlier than the prophylaxis months (30 days each) after the last "
    "infusion (T0 + course days - 1); none -> warning with an acyclovir 400 mg twice-daily "
    "order.",
    indicator="warning",
    source="label",
    citation="PI section 2 (Herpes Prophylaxis: antiviral prophylaxis from the first day of "
    "each course, at least 2 months after treatment or until CD4+ >= 200 cells/uL)",
    check=check_herpes_prophylaxis,
    value_sets=("alemtuzumab-lemtrada-rxnorm", "campath-rxnorm", "herpes-antiviral-rxnorm"),
    policy_keys=("herpes_prophylaxis_months",),
    override_reasons=("indication-order-exists", "patient-contraindication", "policy-contradicts"),
    hooks=ORDER_SIGN,
)
