"""Pregnancy (label section 8.1/8.3 and local policy): exclude pregnancy, advise contraception.

Who is checked: everyone whose administrative gender is not 'male' and whose age at T0 may fall
in the policy's reproductive range. A missing, 'unknown' or 'other' gender is treated as
possibly able to become pregnant (never an all-clear); an unknown birth date as possibly in
range. Evidence of pregnancy (newest hCG positive, or a current pregnancy Condition) is critical
for anyone not recorded as male, whatever the age: the evidence outweighs the demographics.
"""

from __future__ import annotations

from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord
from ..results import Meaning
from ..results import newest as newest_of
from ..terminology import value_set
from .base import Rule
from .conditions import current_conditions
from .indication import age_at
from .labs import lab_results, order_test

TOPIC = "pregnancy"


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
    unreadable = tuple(tests.unreadable) + tuple(u for u in bad if u not in tests.unreadable)
    newest = tests.latest
    positive = (
        [Evidence("hcg", {"result": newest.describe(), "reference": newest.reference})]
        if newest and newest.meaning is Meaning.POSITIVE
        else []
    )
    positive += [
        c.evidence(("pregnancy-condition", "pregnancy-condition-undated")) for c in conditions
    ]
    if positive:
        return Finding(
            TOPIC,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="may-be-pregnant",
            evidence=tuple(positive),
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
            evidence=(who,),
            unreadable=unreadable,
        )
    recent = [r for r in tests.current if (order.t0 - r.when.earliest).days <= window]
    # Same-day ties go to the most worrying result (a same-day indeterminate is no all-clear).
    latest_recent = newest_of(recent)
    evidence = (who,) + (
        (Evidence("hcg", {"result": newest.describe(), "reference": newest.reference}),)
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
    if latest_recent is not None:
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
    logic="Not recorded as male: newest hCG positive or a current pregnancy Condition -> "
    "critical. Age at T0 in the reproductive range (or unknown) without a negative hCG within "
    "the window -> warning with an hCG order. Advice: contraception during and for 4 months "
    "after each course. Gender missing/unknown/other is treated as possibly female.",
    indicator="critical / warning",
    source="label",
    citation="PI section 8.1 (Pregnancy: may cause fetal harm) and section 8.3 (contraception "
    "during and for 4 months after each course); test window and age range are local policy",
    check=check_pregnancy,
    value_sets=(
        "pregnancy-condition",
        "pregnancy-test-loinc",
        "result-indeterminate",
        "result-negative",
        "result-positive",
    ),
    policy_keys=(
        "pregnancy_test_window",
        "reproductive_age_min",
        "reproductive_age_max",
        "contraception_after_course",
    ),
    override_reasons=("action-completed", "patient-ineligible", "recipient-disagrees-evidence"),
)
