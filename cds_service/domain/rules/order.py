"""Checks of the order itself: course interval, dose, premedication, prophylaxis (issue #4).

The course number comes from the record (prior completed alemtuzumab administrations grouped into
courses); the dose, route and days from the order's dosage instructions; premedication and herpes
prophylaxis from the other draft orders signed with it (order-sign only: at order-select the
clinician has not written them yet).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from .. import orderables
from ..fhirdata import Malformed, add_months, parse_date, reference_of
from ..findings import Finding, Severity, Status, Suggestion
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord
from ..terminology import value_set
from .base import ORDER_SIGN, Rule
from .course import (
    LEMTRADA_MG_PER_ML,
    History,
    covered_days,
    dosage_list,
    dose_mg,
    draft_medication,
    order_days,
    other_drafts,
    prior_courses,
    route_of,
)

COURSE_INTERVAL = "course-interval"
DOSE = "dose"
PREMEDICATION = "premedication"
HERPES_PROPHYLAXIS = "herpes-prophylaxis"
UCUM = "http://unitsofmeasure.org"


def _history(record: PatientRecord, order: OrderContext, policy: Policy) -> History:
    return prior_courses(record, order, policy["course_grouping_gap"])


def _expected_days(history: History, policy: Policy) -> int:
    return policy["first_course_days"] if history.number == 1 else policy["later_course_days"]


def _course_lines(history: History) -> list[str]:
    return [f"course {i}: {c.first} to {c.last}: " + "; ".join(str(d) for d in c.doses)
            for i, c in enumerate(history.courses, start=1)]


# -- course interval ---------------------------------------------------------------------------


def check_course_interval(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical when a new course starts less than the interval after the prior course's last
    dose."""
    topic, months = COURSE_INTERVAL, policy["course_interval"]
    history = _history(record, order, policy)
    evidence = tuple(_course_lines(history))
    unreadable = tuple(history.unreadable)
    if not history.courses:
        return Finding(topic, Status.MET, Severity.INFO, reason="first-course",
                       unreadable=unreadable)
    last = history.courses[-1].last
    allowed = add_months(last, months)
    if order.t0 < allowed and order.t0 >= add_months(history.courses[-1].last_certain, months):
        return Finding(topic, Status.UNKNOWN, Severity.WARNING, reason="partly-dated",
                       facts={"latest_allowed_dose": add_months(order.t0, -months).isoformat()},
                       evidence=evidence, unreadable=unreadable)
    if order.t0 < allowed:
        return Finding(topic, Status.NOT_MET, Severity.CRITICAL, reason="too-soon",
                       facts={"course": history.number, "days": (order.t0 - last).days,
                              "last_dose": last.isoformat(), "allowed_start": allowed.isoformat(),
                              "t0": order.t0.isoformat()},
                       evidence=evidence, unreadable=unreadable)
    return Finding(topic, Status.MET, Severity.INFO, reason="interval-kept",
                   facts={"course": history.number, "last_dose": last.isoformat()},
                   evidence=evidence, unreadable=unreadable)


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


def check_dose(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical for a dose other than 12 mg/day or a non-IV route; warning for unstated ones and
    for a course length other than 5 (first course) or 3 (later) days."""
    topic, daily = DOSE, policy["daily_dose"]
    request = order.order.request
    dosages = dosage_list(request)
    critical: list[str] = []
    warnings: list[str] = []
    evidence: list[str] = []
    if not dosages:
        warnings.append("no dosage instruction: dose, route and days not stated")
    for i, dosage in enumerate(dosages, start=1):
        where = f"dosage {i}: " if len(dosages) > 1 else ""
        mg, written = dose_mg(dosage, LEMTRADA_MG_PER_ML)
        if mg is None:
            unreadable_dose = "not stated" if not written else written + " not readable as mg"
            warnings.append(f"{where}dose {unreadable_dose}")
        elif abs(mg - daily) > 1e-6:
            shown = written if written == f"{mg:g} mg" else f"{written} ({mg:g} mg)"
            critical.append(f"{where}dose {shown}, not {daily} mg per day")
        else:
            evidence.append(f"{where}dose {written} = {daily} mg")
        route = route_of(dosage)
        if route.iv is None:
            unclear = "not stated" if not route.written else route.written + " not recognisable"
            warnings.append(f"{where}route {unclear}")
        elif not route.iv:
            critical.append(f"{where}route {route.written}, not intravenous")
        elif route.push:
            critical.append(f"{where}route {route.written}: give as a 4-hour infusion, "
                            "never IV push or bolus")
        else:
            evidence.append(f"{where}route {route.written} (intravenous)")
    history = _history(record, order, policy)
    expected = _expected_days(history, policy)
    days, how = order_days(request)
    course = "the first course" if history.number == 1 else f"course {history.number}"
    if dosages and days is None:
        warnings.append(f"days in the course not readable ({how}): {course} is {expected} days")
    elif days is not None and days != expected:
        warnings.append(f"{days} days ({how}); {course} is {expected} consecutive days")
    elif days is not None:
        evidence.append(f"{days} days ({how}), as for {course}")
    if critical:
        return Finding(topic, Status.NOT_MET, Severity.CRITICAL, reason="problem",
                       facts={"problem": critical[0], "mg_per_ml": LEMTRADA_MG_PER_ML},
                       evidence=tuple(critical + warnings + evidence))
    if warnings:
        status = Status.NOT_MET if days is not None and days != expected else Status.UNKNOWN
        return Finding(topic, status, Severity.WARNING, reason="problem",
                       facts={"problem": warnings[0], "mg_per_ml": LEMTRADA_MG_PER_ML},
                       evidence=tuple(warnings + evidence))
    return Finding(topic, Status.MET, Severity.INFO, reason="as-labelled",
                   facts={"days": days or 0, "course": course}, evidence=tuple(evidence))


DOSE_RULE = Rule(
    topic=DOSE,
    title="Dose, route and days of the course",
    logic="Every dosage: dose other than the daily dose (mg, g, or mL read at 10 mg/mL) or a "
    "route other than IV (SNOMED 47625008 or 'intravenous'/'IV' in text), or IV push/bolus "
    "-> critical; dose or route missing or unreadable -> warning; days (count, boundsPeriod "
    "inclusive or boundsDuration) other than 5 for course 1 or 3 for later courses -> warning.",
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


def _medication_suggestion(key: str, label: str, dosage: dict[str, Any],
                           reason: str) -> Suggestion:
    """A new MedicationRequest for the medication `key` of orderables.json (its RxNorm code)."""
    coding = orderables.coding(key)
    return Suggestion(key=key, label=label, kind="medication",
                      code=(coding["system"], coding["code"]), display=coding["display"],
                      details={"dosage": dosage, "reason": reason})


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
        "text": f"{dose:,} mg IV immediately before the alemtuzumab infusion, once daily on days "
                f"1-{days} of the course",
        "timing": {"repeat": {"boundsPeriod": {"start": t0.isoformat(), "end": end.isoformat()},
                              "count": days, "frequency": 1, "period": 1, "periodUnit": "d"}},
        "route": _route("intravenous", "IV"),
        "doseAndRate": _mg(dose),
    }
    return _medication_suggestion(
        "order-methylprednisolone",
        f"Order methylprednisolone {dose:,} mg IV daily, {t0} to {end}",
        dosage,
        f"Premedication before alemtuzumab on the first {days} days of the course")


def check_premedication(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Among the other draft orders, methylprednisolone 1,000 mg IV covering days 1-3 of the
    course."""
    topic, days, dose = PREMEDICATION, policy["premedication_days"], policy["premedication_dose"]
    last_needed = order.t0 + timedelta(days=days - 1)
    methylpred = value_set("methylprednisolone-rxnorm")
    gaps: list[str] = []
    for draft, name in _candidates(order, "corticosteroid-rxnorm"):
        ref = f"{reference_of(draft)} ({name})"
        short: list[str] = []
        codes, words = draft_medication(draft, order.draft_orders)
        if methylpred.matches_any(list(codes)) is None and methylpred.name_in(words) is None:
            short.append(f"not methylprednisolone: confirm it is equivalent to {dose:,} mg")
        dosages = dosage_list(draft)
        doses = [mg for mg, _ in (dose_mg(d) for d in dosages) if mg is not None]
        if not doses:
            short.append("dose not stated in mg")
        elif max(doses) < dose:
            short.append(f"dose {max(doses):g} mg, below {dose:,} mg")
        routes = [route_of(d) for d in dosages]
        if not any(r.iv for r in routes):
            written = ", ".join(r.written for r in routes if r.written) or "not stated"
            short.append(f"route {written}, not IV")
        first, last = covered_days(draft)
        if first is None:
            short.append("no start date in its timing")
        elif first > order.t0:
            short.append(f"starts {first}, after day 1 ({order.t0})")
        elif last is not None and last < last_needed:
            short.append(f"ends {last}, before day {days} ({last_needed})")
        if not short:
            return Finding(topic, Status.MET, Severity.INFO, reason="ordered",
                           facts={"medication": name}, evidence=(ref,))
        gaps.append(f"{ref}: " + "; ".join(short))
    return Finding(topic, Status.NOT_MET, Severity.WARNING,
                   reason="order-falls-short" if gaps else "not-ordered",
                   facts={"gap": gaps[0] if gaps else "", "t0": order.t0.isoformat(),
                          "last_day": last_needed.isoformat()},
                   evidence=tuple(gaps), suggestions=(premedication_suggestion(order.t0, policy),))


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
    override_reasons=("indication-order-exists", "patient-contraindication",
                      "policy-contradicts"),
    hooks=ORDER_SIGN,
)



def prophylaxis_suggestion(t0: date, until: date) -> Suggestion:
    """Acyclovir 400 mg by mouth twice daily from day 1 until the prophylaxis end (a new order).

    The label fixes no antiviral or dose; 400 mg twice daily is a common choice for the prescriber
    to confirm (RxNorm 197311, verified in rxnorm-dmt-codes.md)."""
    dosage = {
        "sequence": 1,
        "text": "400 mg by mouth twice daily from day 1 of the course until at least 2 months "
                "after the last infusion and until CD4+ lymphocytes are at least 200 cells/uL",
        "timing": {"repeat": {"boundsPeriod": {"start": t0.isoformat(), "end": until.isoformat()},
                              "frequency": 2, "period": 1, "periodUnit": "d"}},
        "route": _route("oral", "oral"),
        "doseAndRate": _mg(400),
    }
    return _medication_suggestion(
        "order-acyclovir",
        f"Order acyclovir 400 mg by mouth twice daily, {t0} to {until} (confirm dose)",
        dosage,
        "Herpes prophylaxis from the first day of the alemtuzumab course")


def check_herpes_prophylaxis(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Among the other draft orders, an anti-herpes antiviral starting on or before day 1."""
    topic, months = HERPES_PROPHYLAXIS, policy["herpes_prophylaxis_months"]
    days, _ = order_days(order.order.request)
    if days is None or days < 1:
        days = _expected_days(_history(record, order, policy), policy)
    last_infusion = order.t0 + timedelta(days=days - 1)
    until = add_months(last_infusion, months)
    minimum = last_infusion + timedelta(days=30 * months)  # "2 months" read as at least 60 days
    gaps: list[str] = []
    for draft, name in _candidates(order, "herpes-antiviral-rxnorm"):
        ref = f"{reference_of(draft)} ({name})"
        first, last = covered_days(draft)
        how = "dosage timing"
        if first is None:
            authored = parse_date(draft.get("authoredOn"))
            first, how = (authored.latest, "authoredOn") if authored else (None, "")
        short: list[str] = []
        if first is None:
            short.append("no start date")
        elif first > order.t0:
            short.append(f"starts {first}, after day 1 ({order.t0})")
        if last is not None and last < minimum:
            short.append(f"ends {last}, before {minimum} ({months} months after the last infusion)")
        if not short:
            return Finding(topic, Status.MET, Severity.INFO, reason="ordered",
                           facts={"medication": name, "start": str(first)},
                           evidence=(f"{ref}: starts {first} ({how})"
                                     + (f", ends {last}" if last else ", open-ended"),))
        gaps.append(f"{ref}: " + "; ".join(short))
    return Finding(topic, Status.NOT_MET, Severity.WARNING,
                   reason="order-falls-short" if gaps else "not-ordered",
                   facts={"gap": gaps[0] if gaps else "", "t0": order.t0.isoformat(),
                          "until": until.isoformat()},
                   evidence=tuple(gaps), suggestions=(prophylaxis_suggestion(order.t0, until),))


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
    override_reasons=("indication-order-exists", "patient-contraindication",
                      "policy-contradicts"),
    hooks=ORDER_SIGN,
)
