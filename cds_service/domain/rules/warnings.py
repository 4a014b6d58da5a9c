"""Warnings and precautions (label sections 2 and 5): recent non-live vaccines, prior Campath,
concurrent immunosuppression, thyroid disorders and malignancies."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from ..fhirdata import (
    CVX,
    ICD10CM,
    Code,
    DateSpan,
    Malformed,
    codings,
    concept_words,
    first_date,
    reference_of,
)
from ..findings import Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import MedicationUse, PatientRecord, Unreadable
from ..terminology import value_set
from .conditions import current_conditions, shorten
from .dmt import matching_uses, taken

NON_LIVE_GAP = "non-live-vaccine-gap"
PRIOR_CAMPATH = "prior-campath"
CONCURRENT = "concurrent-immunosuppression"
THYROID = "thyroid-disorder"
MALIGNANCY = "malignancy"

# Uses that may still be running at T0, by resource type. 'unknown' is included: an unknown
# status is not proof the drug was stopped.
RUNNING = {
    "MedicationStatement": frozenset({"active", "intended", "on-hold", "unknown"}),
    "MedicationRequest": frozenset({"active", "on-hold", "unknown"}),
    "MedicationAdministration": frozenset({"in-progress", "on-hold"}),
}

# ICD-10-CM chapter 2, malignant neoplasms C00-C96 (blocks C00-C75, C7A, C7B, C76-C80, C81-C96;
# C4A is Merkel cell carcinoma). The malignancy-condition value set lists no C codes (see
# terminology/README.md), so the chapter is matched here by prefix. D00-D49 (in situ, benign,
# uncertain behaviour) are not malignancies for this warning.
_ICD10_MALIGNANT = re.compile(r"^C(?:[0-8]\d|9[0-6]|4A|7A|7B)")


def icd10_malignant(code: Code) -> bool:
    """True for an ICD-10-CM code in C00-C96 (codes are stored upper case without the dot)."""
    return code[0] == ICD10CM and _ICD10_MALIGNANT.match(code[1]) is not None


# -- vaccines -----------------------------------------------------------------------------------

def _vaccine_name(imm: dict[str, Any], codes: list[Code]) -> str:
    cvx = next((c for c in codes if c[0] == CVX), None)
    lookalikes = value_set("not-live-lookalike-vaccines-cvx")
    words = [w for w in concept_words(imm.get("vaccineCode")).split(" | ") if w]
    if cvx is not None and cvx in lookalikes.codes:
        name = lookalikes.display(cvx)
    else:
        name = words[-1] if words else "vaccine"
    return f"{name} (CVX {cvx[1]})" if cvx else f"{name} (no CVX code: confirm it is not live)"


def check_non_live_vaccine_gap(record: PatientRecord, order: OrderContext,
                               policy: Policy) -> Finding:
    """Warning when a vaccine that is not live (nor of doubtful liveness) was given inside the gap.

    Live and doubtful vaccines are the live-vaccine-gap rule's; immune globulins, skin tests and
    'no vaccine' codes (non-vaccine-cvx) are not immunizations for this purpose. A vaccine without
    a CVX code is counted here.
    """
    gap = policy["vaccine_min_gap"]
    skip = [value_set(v) for v in ("live-vaccines-cvx", "liveness-ambiguous-vaccines-cvx",
                                    "non-vaccine-cvx")]
    # (earliest start keeping the gap, days before, evidence)
    recent: list[tuple[str, int, str]] = []
    undated: list[str] = []
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
        name = _vaccine_name(imm, codes)
        if when is None:
            problem = record.problem(imm)
            if problem is not None:
                unreadable.append(Unreadable(reference_of(imm), problem))
            else:
                undated.append(f"{name}, date not recorded ({reference_of(imm)}): confirm when "
                               "it was given")
            continue
        days_before = (order.t0 - when.latest).days
        if days_before >= gap:
            continue
        problem = record.problem(imm)
        if problem is not None:
            unreadable.append(Unreadable(reference_of(imm), problem))
            continue
        allowed = when.latest + timedelta(days=gap)
        recent.append((allowed.isoformat(), days_before,
                       f"{name} on {when}, {days_before} days before the planned start "
                       f"({reference_of(imm)}); {gap // 7} weeks after it is {allowed}"))
    if recent or undated:
        closest = min((d for _, d, _ in recent), default=None)
        headline = (f"Vaccine given {closest} days before the start: the label asks to complete "
                    f"immunizations {gap // 7}+ weeks before" if closest is not None
                    else f"Vaccine with unknown date: confirm it was given {gap // 7}+ weeks "
                    "before the start")
        latest_allowed = max((a for a, _, _ in recent), default=None)
        return Finding(
            NON_LIVE_GAP, Status.NOT_MET if recent else Status.UNKNOWN, Severity.WARNING, headline,
            explanation=(f"The label asks to complete any necessary immunizations at least "
                         f"{gap // 7} weeks before treatment. The response to a vaccine given "
                         "closer to the infusion may be reduced."
                         + (f" A start on or after {latest_allowed} keeps the gap."
                            if latest_allowed else ""),),
            evidence=tuple(e for _, _, e in recent) + tuple(undated), unreadable=tuple(unreadable),
        )
    return Finding(NON_LIVE_GAP, Status.MET, Severity.INFO,
                   f"No other vaccine in the {gap} days before the planned start",
                   unreadable=tuple(unreadable))


# -- medication history -------------------------------------------------------------------------

def _when(use: MedicationUse) -> str:
    return f"from {use.start}" if use.start else "undated"


def check_prior_campath(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Warning for any Campath (alemtuzumab 30 mg/mL, for CLL) in the medication history."""
    matches, bad = matching_uses(record, [value_set("campath-rxnorm")], taken)
    found = [f"{f'{m.code_display} ({m.how})' if m.code else m.how}: {m.use.resource_type} "
             f"{m.use.status or 'no status'} {_when(m.use)} ({reference_of(m.use.resource)})"
             for m in matches]
    if found:
        return Finding(
            PRIOR_CAMPATH, Status.NOT_MET, Severity.WARNING,
            "Prior Campath (alemtuzumab) on file: additive, long-lasting immune effects",
            explanation=("Campath has the same active ingredient as Lemtrada. In patients who "
                         "received Campath, exercise increased vigilance for additive and "
                         "long-lasting effects on the immune system.",),
            evidence=tuple(found), unreadable=tuple(bad),
        )
    return Finding(PRIOR_CAMPATH, Status.MET, Severity.INFO, "No prior Campath on file",
                   unreadable=tuple(bad))


def _end(use: MedicationUse) -> DateSpan | None:
    """When a running use is planned to end: a period end, or for a request the latest of its
    dosage bounds ends and its validity period end. A single effectiveDateTime is not an end."""
    resource = use.resource
    if use.resource_type != "MedicationRequest":
        return first_date(resource, "effectivePeriod.end")
    ends = [span for span in (first_date(d, "timing.repeat.boundsPeriod.end")
                              for d in resource.get("dosageInstruction") or ()
                              if isinstance(d, dict))
            if span is not None]
    validity = first_date(resource, "dispenseRequest.validityPeriod.end")
    if validity is not None:
        ends.append(validity)
    return max(ends) if ends else None


def check_concurrent_immunosuppression(record: PatientRecord, order: OrderContext,
                                       policy: Policy) -> Finding:
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
    found: list[tuple[str, str]] = []
    for match in matches:
        use, end = match.use, _end(match.use)
        until = f"until {end}" if end else "no end date"
        found.append((match.ingredient,
                      f"{match.ingredient}: {use.resource_type} {use.status} {_when(use)}, "
                      f"{until} ({reference_of(use.resource)}; matched by {match.how})"))
    if found:
        names = ", ".join(sorted({i for i, _ in found}))
        return Finding(
            CONCURRENT, Status.NOT_MET, Severity.WARNING,
            f"Still on {shorten(names, 60)} at the planned start: stop or document before Lemtrada",
            explanation=("Concomitant antineoplastic or immunosuppressive therapy could increase "
                         "the risk of immunosuppression. Stop the other MS therapy (observing its "
                         "washout) or record why it continues, and mark ended medications as "
                         "stopped.",),
            evidence=tuple(e for _, e in found), unreadable=tuple(bad),
        )
    return Finding(CONCURRENT, Status.MET, Severity.INFO,
                   "No other MS therapy or immunosuppressant running at the planned start",
                   unreadable=tuple(bad))


# -- conditions ---------------------------------------------------------------------------------

def check_thyroid_disorder(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Warning for a current thyroid disorder (benefit must justify the risk)."""
    hits, unreadable = current_conditions(record, [value_set("thyroid-disorder-condition")])
    if hits:
        return Finding(
            THYROID, Status.NOT_MET, Severity.WARNING,
            f"Current thyroid disorder ({shorten(hits[0].name)}): weigh benefit against risk",
            explanation=("In patients with an ongoing thyroid disorder, give alemtuzumab only if "
                         "the potential benefit justifies the potential risks; autoimmune thyroid "
                         "disease is a frequent adverse effect.",),
            evidence=tuple(h.describe() for h in hits), unreadable=tuple(unreadable),
        )
    return Finding(THYROID, Status.MET, Severity.INFO, "No current thyroid disorder on file",
                   unreadable=tuple(unreadable))


def check_malignancy(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Warning for a current malignancy: the value set, or any ICD-10-CM code C00-C96."""
    hits, unreadable = current_conditions(record, [value_set("malignancy-condition")],
                                          extra_match=icd10_malignant)
    if hits:
        return Finding(
            MALIGNANCY, Status.NOT_MET, Severity.WARNING,
            f"Current malignancy ({shorten(hits[0].name)}): use Lemtrada with caution",
            explanation=("Alemtuzumab may increase the risk of malignancies (thyroid cancer, "
                         "melanoma, lymphoproliferative disorders). Use caution in patients with a "
                         "pre-existing or ongoing malignancy.",),
            evidence=tuple(h.describe() for h in hits), unreadable=tuple(unreadable),
        )
    return Finding(MALIGNANCY, Status.MET, Severity.INFO, "No current malignancy on file",
                   unreadable=tuple(unreadable))
