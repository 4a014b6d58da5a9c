"""Varicella-zoster immunity before alemtuzumab (label section 2).

What counts as evidence of immunity follows ACIP (MMWR 2007;56(RR-4), "Prevention of varicella"):
a positive VZV IgG; two doses of a varicella-containing vaccine (CVX 21 varicella, 94 MMRV: the
only CVX codes the CDC table groups under varicella), the second at least the minimum interval
after the first (`varicella_dose_interval`; doses on one day count once; a dose that may have
been given before the first birthday, ACIP's minimum age, does not count); or a varicella or
herpes zoster history diagnosed or verified by a health-care provider. Zoster vaccines are not
varicella vaccination: the recombinant one (CVX 187) holds no live virus, and the live one (CVX
121, Zostavax) is "not indicated for prevention of primary varicella" (its label; ACIP, MMWR
2008;57(RR-5)); neither is in varicella-vaccines-cvx.

Histories: only verificationStatus `confirmed` counts. Provisional, unconfirmed and differential
diagnoses do not; refuted ones are ignored, entered-in-error ones were dropped by PatientRecord.
Local choice: a history WITHOUT a verificationStatus does not count on its own either (FHIR R4
makes the element optional, so its absence says nothing about who verified the history, and
ACIP accepts only a provider-verified history); the card names it and asks to confirm it or to
test antibodies. Vaccinations count only when completed and dated on or before T0 (immunity at
the start is what the label asks about).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..fhirdata import (
    DateSpan,
    Malformed,
    add_months,
    codings,
    first_date,
    parse_date,
    reference_of,
)
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..results import LabResult, Meaning
from ..terminology import value_set
from .base import Rule
from .labs import lab_results, order_test

TOPIC = "vzv-immunity"
CONFIRMED = "confirmed"


def _verification(condition: dict[str, object]) -> str | None:
    """The verificationStatus code of a Condition, or None when none is recorded (or readable)."""
    try:
        for _, code in codings(condition.get("verificationStatus")):
            return code
    except Malformed:
        return None
    return None


def _antibody(result: LabResult) -> Evidence:
    return Evidence("vzv-antibody", {"result": result.describe(), "reference": result.reference})


@dataclass(frozen=True)
class _Dose:
    when: DateSpan
    facts: dict[str, str | int]


def _histories(
    record: PatientRecord, unreadable: list[Unreadable]
) -> tuple[list[Evidence], list[Evidence]]:
    """Confirmed varicella/zoster histories, and those recorded without confirmation."""
    history_vs = value_set("varicella-zoster-history-condition")
    conditions, bad = record.split_readable(record.coded("Condition", history_vs))
    unreadable.extend(bad)
    confirmed: list[Evidence] = []
    unconfirmed: list[Evidence] = []
    for condition in conditions:
        verification = _verification(condition)
        if verification == "refuted":
            continue
        code = record.first_member(codings(condition.get("code")), history_vs)
        assert code is not None
        when = first_date(condition, "onsetDateTime", "onsetPeriod.start", "recordedDate")
        facts: dict[str, str | int | tuple[Evidence, ...]] = {
            "condition": history_vs.display(code),
            "code": code[1],
            "when": str(when),
            "reference": reference_of(condition),
        }
        if verification == CONFIRMED:
            confirmed.append(
                Evidence("varicella-history" if when else "varicella-history-undated", facts)
            )
        else:
            status = verification or (Evidence("verification-not-recorded"),)
            unconfirmed.append(
                Evidence("varicella-history-unconfirmed", {**facts, "verification": status})
            )
    return confirmed, unconfirmed


def _doses(
    record: PatientRecord, order: OrderContext, interval: int, unreadable: list[Unreadable]
) -> tuple[list[Evidence], int, int]:
    """Evidence lines of the varicella vaccinations up to T0, the number of valid doses (distinct
    days at least `interval` days apart, counted from the first) and the number of undated ones."""
    vaccine_vs = value_set("varicella-vaccines-cvx")
    vaccinations, bad = record.split_readable(
        r for r in record.coded("Immunization", vaccine_vs) if r.get("status") == "completed"
    )
    unreadable.extend(bad)
    dated: list[_Dose] = []
    undated: list[Evidence] = []
    for imm in vaccinations:
        code = vaccine_vs.matches_any(codings(imm.get("vaccineCode")))
        assert code is not None
        when = first_date(imm, "occurrenceDateTime")
        facts: dict[str, str | int] = {
            "vaccine": vaccine_vs.display(code),
            "code": code[1],
            "when": str(when),
            "reference": reference_of(imm),
        }
        if when is None:
            undated.append(Evidence("varicella-vaccination-undated", facts))
        elif when.earliest <= order.t0:
            dated.append(_Dose(when, facts))
    evidence: list[Evidence] = []
    valid = 0
    previous: DateSpan | None = None
    born = parse_date(record.patient.get("birthDate")) if record.patient else None
    first_birthday = add_months(born.latest, 12) if born else None
    for dose in sorted(dated, key=lambda d: (d.when.earliest, d.when.latest)):
        if first_birthday is not None and dose.when.earliest < first_birthday:
            # ACIP: the minimum age is 12 months; a dose before it is not a valid dose.
            evidence.append(Evidence("varicella-vaccination-too-young", dose.facts))
            continue
        if previous is None or (dose.when.earliest - previous.latest).days >= interval:
            valid += 1
            previous = dose.when
            evidence.append(Evidence("varicella-vaccination", dose.facts))
        else:
            days = max((dose.when.earliest - previous.latest).days, 0)
            evidence.append(
                Evidence("varicella-vaccination-too-soon", {**dose.facts, "days": days})
            )
    return evidence + undated, valid, len(undated)


def check_vzv_immunity(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Immunity = positive VZV IgG, confirmed varicella/zoster history, or two valid doses of a
    varicella-containing vaccine; anything less asks for a VZV IgG (the label's path)."""
    igg = lab_results(record, "vzv-igg-loinc", order.t0, lookback_days=None)
    unreadable: list[Unreadable] = list(igg.unreadable)
    confirmed, unconfirmed = _histories(record, unreadable)
    doses, valid, undated = _doses(record, order, policy["varicella_dose_interval"], unreadable)

    latest = igg.latest
    antibody = [_antibody(latest)] if latest is not None else []
    igg_positive = latest is not None and latest.meaning is Meaning.POSITIVE
    if igg_positive or confirmed or valid >= 2:
        positive = antibody if igg_positive else []
        return Finding(
            TOPIC,
            Status.MET,
            Severity.INFO,
            reason="immune",
            evidence=tuple(positive + confirmed + (doses if valid >= 2 else [])),
            unreadable=tuple(unreadable),
        )

    evidence = tuple(antibody + doses + unconfirmed)
    if latest is not None and latest.meaning is Meaning.NEGATIVE:
        return Finding(
            TOPIC,
            Status.NOT_MET,
            Severity.WARNING,
            reason="antibody-negative-one-dose" if valid or undated else "antibody-negative",
            evidence=evidence,
            unreadable=tuple(unreadable),
        )
    if valid + undated >= 2:
        reason = "doses-undated"
    elif valid + undated == 1:
        reason = "one-dose"
    elif any(e.kind == "varicella-vaccination-too-young" for e in doses):
        reason = "doses-too-young"
    elif unconfirmed:
        reason = "history-unconfirmed"
    else:
        reason = "unknown"
    return Finding(
        TOPIC,
        Status.UNKNOWN,
        Severity.WARNING,
        reason=reason,
        evidence=evidence,
        unreadable=tuple(unreadable),
        suggestions=(order_test("order-vzv-igg", "vzv-igg"),),
    )


VZV_IMMUNITY_RULE = Rule(
    topic=TOPIC,
    title="Varicella-zoster immunity",
    logic="Immune if the newest VZV IgG is positive, a varicella/zoster history is confirmed "
    "(verificationStatus confirmed; provisional, unconfirmed, differential or, by local choice, "
    "absent do not count), or two completed doses of a varicella-containing vaccine (CVX 21, "
    "94; never zoster vaccines 187 or 121) dated up to T0, from the first birthday on, on "
    "distinct days at least the minimum interval apart. IgG negative -> warning (vaccinate, "
    "start at least the gap after); one dose, undated or infant-only doses, an unconfirmed "
    "history or no evidence -> warning with a VZV IgG order.",
    indicator="warning",
    source="label",
    citation="PI section 2 (Testing and Procedures Prior to Treatment: VZV antibodies, "
    "vaccination of antibody-negative patients); evidence of immunity per ACIP (MMWR "
    "2007;56(RR-4))",
    check=check_vzv_immunity,
    value_sets=(
        "result-indeterminate",
        "result-negative",
        "result-positive",
        "varicella-vaccines-cvx",
        "varicella-zoster-history-condition",
        "vzv-igg-loinc",
    ),
    policy_keys=("vaccine_min_gap", "varicella_dose_interval"),
    override_reasons=("action-completed", "risk-benefit-ratio"),
)
