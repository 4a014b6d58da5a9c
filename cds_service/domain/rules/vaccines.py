"""Vaccines given too close to the planned start: live ones (label section 5) and all others
(label section 2).

A vaccination dated after T0 (every day it may mean is after the planned start) is not "given
before the start": it never counts toward either gap. A live one is still a finding of
live-vaccine-gap, because the label says not to give live viral vaccines after a course (section
5); a non-live one after T0 is not a finding (the label sets no rule for inactivated vaccines
after a course).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..fhirdata import CVX, Code, Malformed, codings, concept_words, first_date, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..terminology import value_set
from .base import Rule

TOPIC = "live-vaccine-gap"
NON_LIVE_GAP = "non-live-vaccine-gap"


def check_live_vaccine_gap(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical when a live vaccine was given less than the minimum gap before T0."""
    gap = policy["vaccine_min_gap"]
    live, ambiguous = value_set("live-vaccines-cvx"), value_set("liveness-ambiguous-vaccines-cvx")
    critical: list[tuple[str, str, Evidence]] = []  # (allowed start, vaccine, evidence)
    after_start: list[tuple[str, Evidence]] = []  # (vaccine, evidence): live, dated after T0
    to_confirm: list[Evidence] = []
    unreadable: list[Unreadable] = list(record.uncoded.get("Immunization", ()))
    for imm in record.by_type.get("Immunization", ()):
        try:
            codes = codings(imm.get("vaccineCode"))
        except Malformed:
            continue  # already reported through record.uncoded
        live_code = live.matches_any(codes)
        ambiguous_code = None if live_code else ambiguous.matches_any(codes)
        if live_code is None and ambiguous_code is None:
            continue
        problem = record.problem(imm)
        if imm.get("status") != "completed" and problem is None:
            continue  # not-done (entered-in-error was dropped earlier): not a vaccination
        if problem is not None:
            unreadable.append(Unreadable(reference_of(imm), problem))
            continue
        code = live_code or ambiguous_code
        assert code is not None
        vs = live if live_code else ambiguous
        name = f"{vs.display(code)} (CVX {code[1]})"
        when = first_date(imm, "occurrenceDateTime")
        if when is None:
            to_confirm.append(
                Evidence("live-vaccine-undated", {"vaccine": name, "reference": reference_of(imm)})
            )
            continue
        if when.earliest > order.t0:
            # After the planned start: not a vaccination before it, but the label forbids live
            # vaccines after a course (a doubtful one asks to confirm the product).
            facts_after: dict[str, str | int] = {
                "vaccine": name,
                "when": str(when),
                "days": (when.earliest - order.t0).days,
                "reference": reference_of(imm),
            }
            if live_code:
                short_name = name.split(", ")[0] if ", " in name else name
                after_start.append((short_name, Evidence("live-vaccine-after-start", facts_after)))
            else:
                to_confirm.append(Evidence("uncertain-vaccine-after-start", facts_after))
            continue
        # A partial date that takes in T0 ("2026-12") counts as inside the gap, said as 0 days
        # before the start, never as a negative number of days.
        days_before = max((order.t0 - when.latest).days, 0)
        if days_before >= gap:
            continue
        allowed = when.latest + timedelta(days=gap)
        facts: dict[str, str | int] = {
            "vaccine": name,
            "when": str(when),
            "days": days_before,
            "reference": reference_of(imm),
            "allowed_start": allowed.isoformat(),
        }
        if live_code:
            # The headline names the vaccine up to its first comma ("OPV", not "OPV, trivalent").
            short = name.split(", ")[0] if ", " in name else f"{name} on {when}"
            critical.append((allowed.isoformat(), short, Evidence("live-vaccine-recent", facts)))
        else:
            to_confirm.append(Evidence("uncertain-vaccine-recent", facts))
    if critical:
        allowed_start = max(a for a, _, _ in critical)
        first = critical[0][1]
        return Finding(
            TOPIC,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="live-vaccine",
            facts={"vaccine": first, "allowed_start": allowed_start, "t0": order.t0.isoformat()},
            evidence=tuple(e for _, _, e in critical)
            + tuple(e for _, e in after_start)
            + tuple(to_confirm),
            unreadable=tuple(unreadable),
        )
    if after_start:
        first_after = after_start[0][1].facts
        return Finding(
            TOPIC,
            Status.NOT_MET,
            Severity.WARNING,
            reason="live-vaccine-after-start",
            facts={
                "vaccine": after_start[0][0],
                "when": str(first_after["when"]),
                "t0": order.t0.isoformat(),
            },
            evidence=tuple(e for _, e in after_start) + tuple(to_confirm),
            unreadable=tuple(unreadable),
        )
    if to_confirm:
        return Finding(
            TOPIC,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="uncertain-liveness",
            evidence=tuple(to_confirm),
            unreadable=tuple(unreadable),
        )
    return Finding(TOPIC, Status.MET, Severity.INFO, reason="none", unreadable=tuple(unreadable))


LIVE_VACCINE_GAP_RULE = Rule(
    topic=TOPIC,
    title="Live vaccine at least {vaccine_min_gap_weeks} weeks before the start",
    logic="Completed Immunization with a live CVX given less than the gap before T0 -> "
    "critical; a live CVX dated after T0 -> warning (no live vaccines after a course; it never "
    "counts as given before the start); a CVX of uncertain liveness or an undated live vaccine "
    "-> warning.",
    indicator="critical / warning",
    source="label",
    citation="PI section 2 (complete immunizations at least 6 weeks before treatment) and "
    "section 5 (do not administer live viral vaccines following a course of LEMTRADA)",
    check=check_live_vaccine_gap,
    value_sets=("live-vaccines-cvx", "liveness-ambiguous-vaccines-cvx"),
    policy_keys=("vaccine_min_gap",),
    override_reasons=("patient-ineligible", "recipient-disagrees-evidence"),
)


def _vaccine_name(imm: dict[str, Any], codes: list[Code]) -> tuple[str, bool]:
    """The vaccine's name (with its CVX code), and whether the record gives no CVX code (its
    evidence line then asks to confirm it is not live)."""
    cvx = next((c for c in codes if c[0] == CVX), None)
    lookalikes = value_set("not-live-lookalike-vaccines-cvx")
    words = [w for w in concept_words(imm.get("vaccineCode")).split(" | ") if w]
    if cvx is not None and cvx in lookalikes.codes:
        name = lookalikes.display(cvx)
    else:
        name = words[-1] if words else "vaccine"
    return (f"{name} (CVX {cvx[1]})", False) if cvx else (name, True)


def check_non_live_vaccine_gap(
    record: PatientRecord, order: OrderContext, policy: Policy
) -> Finding:
    """Warning when a vaccine that is not live (nor of doubtful liveness) was given inside the gap.

    Live and doubtful vaccines are the live-vaccine-gap rule's; immune globulins, skin tests and
    'no vaccine' codes (non-vaccine-cvx) are not immunizations for this purpose. A vaccine without
    a CVX code is counted here.
    """
    gap = policy["vaccine_min_gap"]
    skip = [
        value_set(v)
        for v in ("live-vaccines-cvx", "liveness-ambiguous-vaccines-cvx", "non-vaccine-cvx")
    ]
    # (earliest start keeping the gap, days before, evidence)
    recent: list[tuple[str, int, Evidence]] = []
    undated: list[Evidence] = []
    unreadable: list[Unreadable] = list(record.uncoded.get("Immunization", ()))
    for imm in record.by_type.get("Immunization", ()):
        if imm.get("status") != "completed":
            continue
        try:
            codes = codings(imm.get("vaccineCode"))
        except Malformed:
            continue  # already reported through record.uncoded
        if any(vs.matches_any(codes) for vs in skip):
            continue
        when = first_date(imm, "occurrenceDateTime")
        name, no_cvx = _vaccine_name(imm, codes)
        if when is None:
            problem = record.problem(imm)
            if problem is not None:
                unreadable.append(Unreadable(reference_of(imm), problem))
            else:
                undated.append(
                    Evidence(
                        "vaccine-undated-no-cvx" if no_cvx else "vaccine-undated",
                        {"vaccine": name, "reference": reference_of(imm)},
                    )
                )
            continue
        if when.earliest > order.t0:
            continue  # after the planned start: not given before it, and no rule after a course
        # A partial date that takes in T0 ("2026-12") counts as inside the gap, said as 0 days
        # before the start, never as a negative number of days.
        days_before = max((order.t0 - when.latest).days, 0)
        if days_before >= gap:
            continue
        problem = record.problem(imm)
        if problem is not None:
            unreadable.append(Unreadable(reference_of(imm), problem))
            continue
        allowed = when.latest + timedelta(days=gap)
        recent.append(
            (
                allowed.isoformat(),
                days_before,
                Evidence(
                    "vaccine-recent-no-cvx" if no_cvx else "vaccine-recent",
                    {
                        "vaccine": name,
                        "when": str(when),
                        "days": days_before,
                        "reference": reference_of(imm),
                        "allowed_start": allowed.isoformat(),
                    },
                ),
            )
        )
    evidence = tuple(e for _, _, e in recent) + tuple(undated)
    if recent:
        return Finding(
            NON_LIVE_GAP,
            Status.NOT_MET,
            Severity.WARNING,
            reason="recent",
            facts={
                "days": min(d for _, d, _ in recent),
                "allowed_start": max(a for a, _, _ in recent),
            },
            evidence=evidence,
            unreadable=tuple(unreadable),
        )
    if undated:
        return Finding(
            NON_LIVE_GAP,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="undated",
            evidence=evidence,
            unreadable=tuple(unreadable),
        )
    return Finding(
        NON_LIVE_GAP, Status.MET, Severity.INFO, reason="none", unreadable=tuple(unreadable)
    )


NON_LIVE_VACCINE_GAP_RULE = Rule(
    topic=NON_LIVE_GAP,
    title="Other vaccines at least {vaccine_min_gap_weeks} weeks before the start",
    logic="Completed Immunization that is not live, not of doubtful liveness and not a "
    "non-vaccine CVX (Shingrix 187 and JYNNEOS 206 count here) given less than the gap "
    "before T0 -> warning; an undated one -> warning; one dated after T0 is not counted.",
    indicator="warning",
    source="label",
    citation="PI section 2 (Testing and Procedures Prior to Treatment: complete any necessary "
    "immunizations at least 6 weeks prior to treatment)",
    check=check_non_live_vaccine_gap,
    value_sets=(
        "live-vaccines-cvx",
        "liveness-ambiguous-vaccines-cvx",
        "non-vaccine-cvx",
        "not-live-lookalike-vaccines-cvx",
    ),
    policy_keys=("vaccine_min_gap",),
    override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
)
