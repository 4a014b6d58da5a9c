"""Medication history and current medications: prior Campath and other MS therapies or
immunosuppressants still running at the planned start (label section 5)."""

from __future__ import annotations

from ..fhirdata import DateSpan, first_date, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import MedicationUse, PatientRecord
from ..terminology import value_set
from .base import Rule
from .conditions import shorten
from .dmt import matching_uses, taken

PRIOR_CAMPATH = "prior-campath"
CONCURRENT = "concurrent-immunosuppression"

# Uses that may still be running at T0, by resource type. 'unknown' is included: an unknown
# status is not proof the drug was stopped.
RUNNING = {
    "MedicationStatement": frozenset({"active", "intended", "on-hold", "unknown"}),
    "MedicationRequest": frozenset({"active", "on-hold", "unknown"}),
    "MedicationAdministration": frozenset({"in-progress", "on-hold"}),
}


def check_prior_campath(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Warning for any Campath (alemtuzumab 30 mg/mL, for CLL) in the medication history."""
    matches, bad = matching_uses(record, [value_set("campath-rxnorm")], taken)
    found = [
        Evidence(
            "campath" if m.use.start else "campath-undated",
            {
                "medication": (
                    Evidence("coded-medication", {"display": str(m.code_display), "how": m.how}),
                )
                if m.code
                else m.how,
                "resource_type": m.use.resource_type,
                "status": m.use.status or "no status",
                "start": str(m.use.start),
                "reference": reference_of(m.use.resource),
            },
        )
        for m in matches
    ]
    if found:
        return Finding(
            PRIOR_CAMPATH,
            Status.NOT_MET,
            Severity.WARNING,
            reason="found",
            evidence=tuple(found),
            unreadable=tuple(bad),
        )
    return Finding(PRIOR_CAMPATH, Status.MET, Severity.INFO, reason="none", unreadable=tuple(bad))


PRIOR_CAMPATH_RULE = Rule(
    topic=PRIOR_CAMPATH,
    title="Prior Campath use",
    logic="Any MedicationStatement/Request/Administration of Campath (RxNorm Campath codes or "
    "the name in text), not recorded as not taken -> warning.",
    indicator="warning",
    source="label",
    citation="PI section 5 (same active ingredient as CAMPATH: increased vigilance for "
    "additive and long-lasting effects on the immune system)",
    check=check_prior_campath,
    value_sets=("campath-rxnorm",),
    override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
)


def _end(use: MedicationUse) -> DateSpan | None:
    """When a running use is planned to end: a period end, or for a request the latest of its
    dosage bounds ends and its validity period end. A single effectiveDateTime is not an end."""
    resource = use.resource
    if use.resource_type != "MedicationRequest":
        return first_date(resource, "effectivePeriod.end")
    ends = [
        span
        for span in (
            first_date(d, "timing.repeat.boundsPeriod.end")
            for d in resource.get("dosageInstruction") or ()
            if isinstance(d, dict)
        )
        if span is not None
    ]
    validity = first_date(resource, "dispenseRequest.validityPeriod.end")
    if validity is not None:
        ends.append(validity)
    return max(ends) if ends else None


def check_concurrent_immunosuppression(
    record: PatientRecord, order: OrderContext, policy: Policy
) -> Finding:
    """Warning for another MS DMT or an immunosuppressant still running at T0.

    Running: MedicationStatement active/intended/on-hold/unknown, MedicationRequest
    active/on-hold/unknown, MedicationAdministration in-progress/on-hold, unless its end date is
    before T0. No end date means it may still be running.
    """

    def running_at_t0(use: MedicationUse) -> bool:
        if use.status not in RUNNING.get(use.resource_type, frozenset()):
            return False
        end = _end(use)
        return end is None or end.latest >= order.t0

    sets = [value_set("ms-dmt-rxnorm"), value_set("immunosuppressant-rxnorm")]
    matches, bad = matching_uses(record, sets, running_at_t0)
    found: list[tuple[str, Evidence]] = []
    for match in matches:
        use, end = match.use, _end(match.use)
        found.append(
            (
                match.ingredient,
                Evidence(
                    ("running-until" if end else "running-no-end")
                    if use.start
                    else ("running-undated-until" if end else "running-undated-no-end"),
                    {
                        "ingredient": match.ingredient,
                        "resource_type": use.resource_type,
                        "status": str(use.status),
                        "start": str(use.start),
                        "end": str(end),
                        "reference": reference_of(use.resource),
                        "matched_by": match.how,
                    },
                ),
            )
        )
    if found:
        names = ", ".join(sorted({i for i, _ in found}))
        return Finding(
            CONCURRENT,
            Status.NOT_MET,
            Severity.WARNING,
            reason="running",
            facts={"medications": shorten(names, 60)},
            evidence=tuple(e for _, e in found),
            unreadable=tuple(bad),
        )
    return Finding(CONCURRENT, Status.MET, Severity.INFO, reason="none", unreadable=tuple(bad))


CONCURRENT_IMMUNOSUPPRESSION_RULE = Rule(
    topic=CONCURRENT,
    title="No other MS therapy or immunosuppressant running",
    logic="Another MS DMT or an immunosuppressant (RxNorm code or name) in a "
    "MedicationStatement (active/intended/on-hold/unknown), MedicationRequest "
    "(active/on-hold/unknown) or MedicationAdministration (in-progress/on-hold) without an end "
    "date before T0 -> warning.",
    indicator="warning",
    source="label",
    citation="PI section 5 (concomitant antineoplastic or immunosuppressive therapies could "
    "increase the risk of immunosuppression)",
    check=check_concurrent_immunosuppression,
    value_sets=("immunosuppressant-rxnorm", "ms-dmt-rxnorm"),
    override_reasons=("action-completed", "risk-benefit-ratio"),
)
