"""Live vaccines within 6 weeks before the planned start (label section 2)."""

from __future__ import annotations

from datetime import timedelta

from ..fhirdata import Malformed, codings, first_date, reference_of
from ..findings import Finding, Severity, Status, met
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..terminology import value_set

TOPIC = "live-vaccine-gap"


def check_live_vaccine_gap(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical when a live vaccine was given less than the minimum gap before T0."""
    gap = policy["vaccine_min_gap"]
    live, ambiguous = value_set("live-vaccines-cvx"), value_set("liveness-ambiguous-vaccines-cvx")
    critical: list[tuple[str, str]] = []  # (allowed start, evidence)
    to_confirm: list[str] = []
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
            to_confirm.append(f"{name}, date not readable ({reference_of(imm)}): confirm when it "
                              "was given")
            continue
        days_before = (order.t0 - when.latest).days
        if days_before >= gap:
            continue
        allowed = when.latest + timedelta(days=gap)
        text = (f"{name} on {when}, {days_before} days before the planned start "
                f"({reference_of(imm)})")
        if live_code:
            critical.append((allowed.isoformat(), f"{text}; earliest allowed start {allowed}"))
        else:
            to_confirm.append(f"{text}: confirm the product; if live, earliest allowed start "
                              f"{allowed}")
    if critical:
        allowed_start = max(a for a, _ in critical)
        first = critical[0][1].split(", ")[0]
        return Finding(
            TOPIC, Status.NOT_MET, Severity.CRITICAL,
            f"Live vaccine {first}: do not start Lemtrada before {allowed_start}",
            explanation=(
                f"A live vaccine was given less than {gap} days before the planned start "
                f"({order.t0}). Postpone the first infusion to {allowed_start} or later.",
            ),
            evidence=tuple(e for _, e in critical) + tuple(to_confirm),
            unreadable=tuple(unreadable),
        )
    if to_confirm:
        return Finding(
            TOPIC, Status.UNKNOWN, Severity.WARNING,
            "Vaccine of uncertain liveness within 6 weeks: confirm the product before starting",
            explanation=(f"A vaccine code that may be a live vaccine was recorded within {gap} "
                         "days before the planned start; treat it as live unless confirmed "
                         "otherwise.",),
            evidence=tuple(to_confirm),
            unreadable=tuple(unreadable),
        )
    finding = met(TOPIC, f"No live vaccine in the {gap} days before the planned start")
    return Finding(finding.topic, finding.status, finding.severity, finding.headline,
                   unreadable=tuple(unreadable))
