"""Varicella-zoster immunity before alemtuzumab (label section 2)."""

from __future__ import annotations

from ..fhirdata import Malformed, codings, first_date, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..results import LabResult, Meaning
from ..terminology import value_set
from .base import Rule
from .labs import lab_results, order_test

TOPIC = "vzv-immunity"


def _refuted(condition: dict[str, object]) -> bool:
    try:
        return any(code == "refuted" for _, code in codings(condition.get("verificationStatus")))
    except Malformed:
        return False


def _antibody(result: LabResult) -> Evidence:
    return Evidence("vzv-antibody", {"result": result.describe(), "reference": result.reference})


def check_vzv_immunity(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Immunity = positive VZV IgG, varicella/zoster history, or varicella vaccination."""
    igg = lab_results(record, "vzv-igg-loinc", order.t0, lookback_days=None)
    unreadable: list[Unreadable] = list(igg.unreadable)
    immune: list[Evidence] = []

    history_vs = value_set("varicella-zoster-history-condition")
    conditions, bad = record.split_readable(record.coded("Condition", history_vs))
    unreadable.extend(bad)
    for condition in conditions:
        if _refuted(condition):
            continue
        code = history_vs.matches_any(codings(condition.get("code")))
        when = first_date(condition, "onsetDateTime", "recordedDate")
        assert code is not None
        immune.append(
            Evidence(
                "varicella-history" if when else "varicella-history-undated",
                {
                    "condition": history_vs.display(code),
                    "code": code[1],
                    "when": str(when),
                    "reference": reference_of(condition),
                },
            )
        )

    vaccine_vs = value_set("varicella-vaccines-cvx")
    vaccinations, bad = record.split_readable(
        r for r in record.coded("Immunization", vaccine_vs) if r.get("status") == "completed"
    )
    unreadable.extend(bad)
    for imm in vaccinations:
        code = vaccine_vs.matches_any(codings(imm.get("vaccineCode")))
        assert code is not None
        when = first_date(imm, "occurrenceDateTime")
        immune.append(
            Evidence(
                "varicella-vaccination" if when else "varicella-vaccination-undated",
                {
                    "vaccine": vaccine_vs.display(code),
                    "code": code[1],
                    "when": str(when),
                    "reference": reference_of(imm),
                },
            )
        )

    latest = igg.latest
    if latest is not None and latest.meaning is Meaning.POSITIVE:
        immune.insert(0, _antibody(latest))
    if immune:
        return Finding(
            TOPIC,
            Status.MET,
            Severity.INFO,
            reason="immune",
            evidence=tuple(immune),
            unreadable=tuple(unreadable),
        )

    suggestion = order_test("order-vzv-igg", "vzv-igg")
    if latest is not None and latest.meaning is Meaning.NEGATIVE:
        return Finding(
            TOPIC,
            Status.NOT_MET,
            Severity.WARNING,
            reason="antibody-negative",
            evidence=(_antibody(latest),),
            unreadable=tuple(unreadable),
        )
    evidence = [_antibody(latest)] if latest else []
    return Finding(
        TOPIC,
        Status.UNKNOWN,
        Severity.WARNING,
        reason="unknown",
        evidence=tuple(evidence),
        unreadable=tuple(unreadable),
        suggestions=(suggestion,),
    )


VZV_IMMUNITY_RULE = Rule(
    topic=TOPIC,
    title="Varicella-zoster immunity",
    logic="Immune if VZV IgG positive, varicella/zoster history (any clinical status) or "
    "varicella vaccination (CVX 21, 94); IgG negative without vaccination -> warning "
    "(vaccinate, wait the gap); no evidence -> warning with a VZV IgG order.",
    indicator="warning",
    source="label",
    citation="PI section 2 (Testing and Procedures Prior to Treatment: VZV antibodies, "
    "vaccination of antibody-negative patients)",
    check=check_vzv_immunity,
    value_sets=(
        "result-indeterminate",
        "result-negative",
        "result-positive",
        "varicella-vaccines-cvx",
        "varicella-zoster-history-condition",
        "vzv-igg-loinc",
    ),
    policy_keys=("vaccine_min_gap",),
    override_reasons=("action-completed", "risk-benefit-ratio"),
)
