"""Pregnancy (label section 8.1/8.3 and local policy): exclude pregnancy, advise contraception.

Who is checked: everyone whose administrative gender is not 'male' and whose age at T0 may fall
in the policy's reproductive range. A missing, 'unknown' or 'other' gender is treated as
possibly able to become pregnant (never an all-clear); an unknown birth date as possibly in
range. Evidence of pregnancy (newest hCG positive, or a current pregnancy Condition) is critical
for anyone not recorded as male, whatever the age: the evidence outweighs the demographics.

The newest evidence wins (issue 13). A pregnancy ends with a Condition of pregnancy-ended-condition
(delivery, miscarriage, abortion, ectopic or molar outcome, postpartum state), dated by its onset,
or with a pregnancy Condition that is resolved, inactive or in remission, dated by its abatement
(else its onset: it ended after it began). A positive hCG or current pregnancy Condition with such
an end dated on or after it is no longer a hard stop; nor is one older than `positive_hcg_max_age`
(no pregnancy lasts that long). Ends whose verificationStatus is refuted, provisional, unconfirmed
or differential are not ends (one without a status counts: the test-window warning still asks for
a negative hCG). In both cases the check goes on to the test window: a recent negative hCG is
still required, so nothing is cleared on an old record alone. An undated current pregnancy
Condition cannot be placed before any end and stays critical. A code in both value sets is read
as an end (an ectopic or molar pregnancy does not continue).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from ..fhirdata import ICD10CM, Code, DateSpan, Malformed, codings, first_date, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..results import Meaning
from ..results import newest as newest_of
from ..terminology import value_set
from .base import Rule
from .conditions import clinical_status, current_conditions
from .indication import age_at
from .labs import lab_results, order_test

TOPIC = "pregnancy"
ENDED_STATUSES = frozenset({"inactive", "resolved", "remission"})
NOT_AN_END = frozenset({"refuted", "provisional", "unconfirmed", "differential"})


@dataclass(frozen=True)
class _Dated:
    """A piece of pregnancy evidence and the day it speaks for (None: undated)."""

    when: DateSpan | None
    evidence: Evidence


def _verification(condition: dict[str, Any]) -> str | None:
    try:
        for _, code in codings(condition.get("verificationStatus")):
            return code
    except Malformed:
        return None
    return None


def _dotted(code: Code) -> str:
    """A code as a clinician writes it: ICD-10-CM with its dot after the third character."""
    value = code[1]
    return f"{value[:3]}.{value[3:]}" if code[0] == ICD10CM and len(value) > 3 else value


def _pregnancy_ends(record: PatientRecord, unreadable: list[Unreadable]) -> list[_Dated]:
    """Every recorded end of a pregnancy, dated by the earliest day it can have happened."""
    ended_vs, pregnancy_vs = (
        value_set("pregnancy-ended-condition"),
        value_set("pregnancy-condition"),
    )
    ends: list[_Dated] = []
    seen: set[int] = set()
    for vs, dated_by in (
        (ended_vs, ("onsetDateTime", "onsetPeriod.start")),
        (
            pregnancy_vs,
            ("abatementDateTime", "abatementPeriod.start", "onsetDateTime", "onsetPeriod.start"),
        ),
    ):
        conditions, bad = record.split_readable(record.coded("Condition", vs))
        unreadable.extend(u for u in bad if u not in unreadable)
        for condition in conditions:
            if id(condition) in seen or _verification(condition) in NOT_AN_END:
                continue
            codes = codings(condition.get("code"))
            still_current = clinical_status(condition) not in ENDED_STATUSES
            if vs is pregnancy_vs and (ended_vs.matches_any(codes) or still_current):
                continue  # an outcome (read above), or a pregnancy still current or unknown
            seen.add(id(condition))
            code = vs.matches_any(codes)
            assert code is not None
            when = first_date(condition, *dated_by)
            if when is None:
                continue  # an undated end cannot be placed after anything
            ends.append(
                _Dated(
                    when,
                    Evidence(
                        "pregnancy-ended",
                        {
                            "condition": vs.display(code),
                            "system": "ICD-10-CM" if code[0] == ICD10CM else "SNOMED CT",
                            "code": _dotted(code),
                            "when": str(when),
                            "reference": reference_of(condition),
                        },
                    ),
                )
            )
    return ends


def _pregnancy_status(
    record: PatientRecord, t0: date, unreadable: list[Unreadable]
) -> list[_Dated]:
    """The newest recorded pregnancy status (US Core, LOINC 82810-3), when it says pregnant.

    Only the newest status counts (a later "Not pregnant" replaces an earlier "Pregnant"). A
    status is a clinician's statement, not a test: "Not pregnant" never satisfies the hCG window.
    """
    statuses = lab_results(record, "pregnancy-status-loinc", t0, lookback_days=None)
    unreadable.extend(u for u in statuses.unreadable if u not in unreadable)
    if not statuses.current:
        return []
    newest = max(statuses.current, key=lambda r: r.when.earliest)
    try:
        answer = codings(newest.resource.get("valueCodeableConcept"))
    except Malformed:
        answer = []
    pregnant = value_set("pregnancy-status-pregnant")
    code = pregnant.matches_any(answer)
    if code is None:
        return []
    return [
        _Dated(
            newest.when,
            Evidence(
                "pregnancy-status",
                {
                    "status": pregnant.display(code),
                    "code": code[1],
                    "when": str(newest.when),
                    "reference": newest.reference,
                },
            ),
        )
    ]


def _superseded(item: _Dated, ends: list[_Dated], t0: date, max_age: int) -> Evidence | None:
    """Why a positive piece of evidence is no longer a hard stop, or None when it still is."""
    if item.when is None:
        return None
    start = item.when.latest
    after = [(e.when.earliest, e.evidence) for e in ends if e.when and e.when.earliest >= start]
    if after:
        _, end = max(after, key=lambda pair: pair[0])
        return Evidence("positive-then-ended", {"evidence": (item.evidence, end)})
    if (t0 - item.when.latest).days > max_age:
        return Evidence("positive-too-old", {"evidence": (item.evidence,)})
    return None


def check_pregnancy(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Positive hCG or current pregnancy -> critical; no recent negative hCG -> warning with a
    test."""
    low, high = policy["reproductive_age_min"], policy["reproductive_age_max"]
    window = policy["pregnancy_test_window"]
    gender = record.patient.get("gender") if record.patient else None
    if gender == "male":
        return Finding(
            TOPIC,
            Status.MET,
            Severity.INFO,
            reason="male",
            evidence=(Evidence("gender", {"gender": gender}),),
        )
    tests = lab_results(record, "pregnancy-test-loinc", order.t0, lookback_days=None)
    conditions, bad = current_conditions(record, [value_set("pregnancy-condition")])
    found_unreadable = list(tests.unreadable) + [u for u in bad if u not in tests.unreadable]
    ends = _pregnancy_ends(record, found_unreadable)
    newest = tests.latest
    ended_vs = value_set("pregnancy-ended-condition")
    positive = (
        [
            _Dated(
                newest.when,
                Evidence("hcg", {"result": newest.describe(), "reference": newest.reference}),
            )
        ]
        if newest and newest.meaning is Meaning.POSITIVE
        else []
    )
    positive += [
        _Dated(
            first_date(c.resource, "onsetDateTime", "onsetPeriod.start", "recordedDate"),
            c.evidence(("pregnancy-condition", "pregnancy-condition-undated")),
        )
        for c in conditions
        if c.code not in ended_vs
    ]
    positive += _pregnancy_status(record, order.t0, found_unreadable)
    unreadable = tuple(found_unreadable)
    critical: list[Evidence] = []
    superseded: list[Evidence] = []
    for item in positive:
        why = _superseded(item, ends, order.t0, policy["positive_hcg_max_age"])
        if why is None:
            critical.append(item.evidence)
        else:
            superseded.append(why)
    if critical:
        return Finding(
            TOPIC,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="may-be-pregnant",
            evidence=tuple(critical) + tuple(superseded),
            unreadable=unreadable,
        )
    age, _ = age_at(record, order.t0)
    who = Evidence(
        "gender-and-age",
        {"gender": gender or "not recorded", "years": str(age) if age else "unknown"},
    )
    if age is not None and (age.youngest > high or age.oldest < low):
        return Finding(
            TOPIC,
            Status.MET,
            Severity.INFO,
            reason="outside-age-range",
            evidence=(who, *superseded),
            unreadable=unreadable,
        )
    recent = [r for r in tests.current if (order.t0 - r.when.earliest).days <= window]
    # Same-day ties go to the most worrying result (a same-day indeterminate is no all-clear).
    latest_recent = newest_of(recent)
    evidence = (who,) + (
        tuple(superseded)
        if superseded
        else (Evidence("hcg", {"result": newest.describe(), "reference": newest.reference}),)
        if newest
        else ()
    )
    if latest_recent is not None and latest_recent.meaning is Meaning.NEGATIVE:
        return Finding(
            TOPIC,
            Status.MET,
            Severity.INFO,
            reason="negative-test",
            facts={"when": str(latest_recent.when)},
            evidence=evidence + (Evidence("contraception-advice"),),
            unreadable=unreadable,
        )
    suggestion = order_test("order-hcg", "hcg")
    if latest_recent is not None and latest_recent.meaning is Meaning.POSITIVE:
        reason = "positive-test-then-ended"  # a hard stop no more, but no negative test either
    elif latest_recent is not None:
        reason = "indeterminate-test"
    elif gender not in ("female",):
        reason = "no-test-sex-unknown"
    else:
        reason = "no-test"
    return Finding(
        TOPIC,
        Status.UNKNOWN,
        Severity.WARNING,
        reason=reason,
        facts={
            "when": str(latest_recent.when) if latest_recent else "",
            "t0": order.t0.isoformat(),
        },
        evidence=evidence,
        unreadable=unreadable,
        suggestions=(suggestion,),
    )


PREGNANCY_RULE = Rule(
    topic=TOPIC,
    title="Pregnancy excluded, contraception advised",
    logic="Not recorded as male: newest hCG positive, a current pregnancy Condition or a newest "
    "recorded pregnancy status (LOINC 82810-3) of Pregnant -> "
    "critical, unless a pregnancy end (delivery, miscarriage, abortion, ectopic/molar outcome, "
    "postpartum state, or a resolved/inactive pregnancy) is dated on or after it, or it is "
    "older than the maximum length of a pregnancy (the newest evidence wins; the test window "
    "still applies). Age at T0 in the reproductive range (or unknown) without a negative hCG "
    "within the window -> warning with an hCG order. Advice: contraception during and for 4 months "
    "after each course. Gender missing/unknown/other is treated as possibly female.",
    indicator="critical / warning",
    source="label",
    citation="PI section 8.1 (Pregnancy: may cause fetal harm) and section 8.3 (contraception "
    "during and for 4 months after each course); test window, age range and the age of a "
    "positive hCG that still stops are local policy",
    check=check_pregnancy,
    value_sets=(
        "pregnancy-condition",
        "pregnancy-ended-condition",
        "pregnancy-status-loinc",
        "pregnancy-status-pregnant",
        "pregnancy-test-loinc",
        "result-indeterminate",
        "result-negative",
        "result-positive",
    ),
    policy_keys=(
        "pregnancy_test_window",
        "positive_hcg_max_age",
        "reproductive_age_min",
        "reproductive_age_max",
        "contraception_after_course",
    ),
    override_reasons=("action-completed", "patient-ineligible", "recipient-disagrees-evidence"),
)
