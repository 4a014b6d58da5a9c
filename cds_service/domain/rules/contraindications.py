"""Contraindications (label section 4): hypersensitivity to alemtuzumab, HIV and active
infection."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from ..fhirdata import Malformed, codings, concept_words, first_date, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..terminology import value_set
from .base import Rule
from .conditions import (
    UNRECORDED,
    ConditionHit,
    current_conditions,
    refuted,
    shorten,
    status_fact,
)
from .unassessed import INFECTION_WORDS, nothing_found

HYPERSENSITIVITY = "hypersensitivity"
ACTIVE_INFECTION = "active-infection"
INACTIVE_ALLERGY = frozenset({"inactive", "resolved"})
SPECIFIC_INFECTION_SETS = (
    "active-tuberculosis-condition",
    "hiv-condition",
    "hepatitis-b-condition",
    "hepatitis-c-condition",
)
"""Chronic infections the label names or implies: a hard stop whatever the entry's date."""


def _allergy_concepts(allergy: dict[str, Any]) -> list[Any]:
    """The allergy's code and every reaction.substance: either may name the drug."""
    concepts = [allergy.get("code")]
    reactions = allergy.get("reaction")
    if isinstance(reactions, list):
        concepts.extend(r.get("substance") for r in reactions if isinstance(r, dict))
    return [c for c in concepts if c is not None]


def _allergy_match(allergy: dict[str, Any]) -> tuple[Evidence, ...] | None:
    """How an allergy names alemtuzumab (RxNorm code or a name in its text) as an evidence part,
    or None."""
    vs = value_set("alemtuzumab-allergen")
    for concept in _allergy_concepts(allergy):
        try:
            code = vs.matches_any(codings(concept))
        except Malformed:
            code = None
        if code is not None:
            return (
                Evidence(
                    "coded-medication",
                    {
                        "display": vs.display(code),
                        "how": (Evidence("matched-by-code", {"code": code[1]}),),
                    },
                ),
            )
        named = vs.name_in(concept_words(concept))
        if named is not None:
            return (Evidence("matched-by-name", {"name": named[0]}),)
    return None


def _allergy_status(allergy: dict[str, Any]) -> str | None:
    """'active' or UNRECORDED when the allergy may be current; else None."""
    if refuted(allergy):
        return None
    try:
        statuses = [code for _, code in codings(allergy.get("clinicalStatus"))]
    except Malformed:
        statuses = []
    if not statuses:
        return UNRECORDED
    return None if statuses[0] in INACTIVE_ALLERGY else statuses[0]


def _allergy_detail(allergy: dict[str, Any]) -> str:
    parts: list[str] = []
    criticality = allergy.get("criticality")
    if isinstance(criticality, str):
        parts.append(f"criticality {criticality}")
    for reaction in allergy.get("reaction") or ():
        if not isinstance(reaction, dict):
            continue
        for manifestation in reaction.get("manifestation") or ():
            words = concept_words(manifestation).split(" | ")[0]
            if words:
                parts.append(f"reaction {words}")
    return ", ".join(parts)


def check_hypersensitivity(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical for a current AllergyIntolerance to alemtuzumab (Lemtrada or Campath), by code or
    name."""
    unreadable: list[Unreadable] = list(record.uncoded.get("AllergyIntolerance", ()))
    found: list[Evidence] = []
    for allergy in record.by_type.get("AllergyIntolerance", ()):
        how = _allergy_match(allergy)
        if how is None:
            continue
        problem = record.problem(allergy)
        if problem is not None:
            unreadable.append(Unreadable(reference_of(allergy), problem))
            continue
        status = _allergy_status(allergy)
        if status is None:
            continue
        when = first_date(allergy, "recordedDate", "onsetDateTime", "lastOccurrence")
        detail = _allergy_detail(allergy)
        found.append(
            Evidence(
                "allergy",
                {
                    "allergen": how,
                    "status": status_fact(status),
                    "detail": f", {detail}" if detail else "",
                    "when": str(when) if when else "undated",
                    "reference": reference_of(allergy),
                },
            )
        )
    if found:
        return Finding(
            HYPERSENSITIVITY,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="allergy",
            evidence=tuple(found),
            unreadable=tuple(unreadable),
        )
    return Finding(
        HYPERSENSITIVITY, Status.MET, Severity.INFO, reason="none", unreadable=tuple(unreadable)
    )


HYPERSENSITIVITY_RULE = Rule(
    topic=HYPERSENSITIVITY,
    title="No hypersensitivity to alemtuzumab",
    logic="AllergyIntolerance (clinicalStatus active or not recorded; not refuted or "
    "entered-in-error) coded with a Lemtrada/Campath/alemtuzumab RxNorm code, or naming "
    "alemtuzumab, Lemtrada or Campath in its code or reaction substance -> critical.",
    indicator="critical",
    source="label",
    citation="PI section 4 (Contraindications: known hypersensitivity or anaphylactic "
    "reactions to alemtuzumab or any excipient)",
    check=check_hypersensitivity,
    value_sets=("alemtuzumab-allergen",),
    override_reasons=("recipient-disagrees-evidence", "risk-benefit-ratio"),
)


def _recent(hit: ConditionHit, t0: date, window_days: int) -> bool:
    """Onset or recorded date within the window before the planned start (or after it); a partial
    date counts when any day it may mean is inside. Undated entries are not recent."""
    earliest_recent = t0 - timedelta(days=window_days)
    for path in ("onsetDateTime", "onsetPeriod.start", "recordedDate"):
        when = first_date(hit.resource, path)
        if when is not None and when.latest >= earliest_recent:
            return True
    return False


def check_active_infection(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Critical for a current active TB, HIV or hepatitis B/C, or a recent serious infection;
    a warning to confirm resolution for an older or undated one, or a minor one.

    HIV counts with any clinical status except refuted: the label contraindication is infection
    with HIV, which an 'inactive' or 'remission' status does not end. TB, HIV and hepatitis B/C
    are hard stops whatever their date (chronic infections). Other infections (problem lists keep
    stale entries: a 1971 sepsis still 'active') are a hard stop only when recent, within the local
    window infection_recent_window, and serious (acute-infection-condition); older or undated
    ones, and minor ones (minor-infection-condition: nail or skin fungus, a cold), ask the
    pharmacist to confirm they are resolved.
    """
    sets = [value_set(vs_id) for vs_id in SPECIFIC_INFECTION_SETS]
    hits, unreadable = current_conditions(record, sets)
    hiv = value_set("hiv-condition")
    hiv_hits, hiv_bad = current_conditions(
        record, [hiv], also=frozenset({"inactive", "remission", "resolved"})
    )
    seen = {id(h.resource) for h in hits}
    hits.extend(h for h in hiv_hits if id(h.resource) not in seen)
    unreadable.extend(u for u in hiv_bad if u not in unreadable)
    serious = value_set("acute-infection-condition")
    other_hits, other_bad = current_conditions(
        record, [serious, value_set("minor-infection-condition")]
    )
    unreadable.extend(u for u in other_bad if u not in unreadable)
    seen = {id(h.resource) for h in hits}
    window = policy["infection_recent_window"]
    to_confirm: list[ConditionHit] = []
    for hit in other_hits:
        if id(hit.resource) in seen:
            continue
        if hit.code in serious and _recent(hit, order.t0, window):
            hits.append(hit)
        else:
            to_confirm.append(hit)
    if hits:
        return Finding(
            ACTIVE_INFECTION,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason="infection",
            facts={"condition": shorten(hits[0].name)},
            evidence=tuple(h.evidence() for h in hits + to_confirm),
            unreadable=tuple(unreadable),
        )
    if to_confirm:
        first = to_confirm[0]
        when = first_date(first.resource, "onsetDateTime", "onsetPeriod.start", "recordedDate")
        return Finding(
            ACTIVE_INFECTION,
            Status.NOT_MET,
            Severity.WARNING,
            reason="confirm-resolved" if when is not None else "confirm-resolved-undated",
            facts={"condition": shorten(first.name), "when": str(when)},
            evidence=tuple(h.evidence() for h in to_confirm),
            unreadable=tuple(unreadable),
        )
    # None recognised: a current Condition whose name says infection is a warning to review it;
    # 'none on file' only when every current disease was assessed (rules/unassessed.py).
    return nothing_found(ACTIVE_INFECTION, record, unreadable, INFECTION_WORDS)


ACTIVE_INFECTION_RULE = Rule(
    topic=ACTIVE_INFECTION,
    title="No active infection or HIV infection",
    logic="Current Condition (clinicalStatus active/recurrence/relapse, or not recorded "
    "without abatement; not refuted) of active tuberculosis, hepatitis B or C, or an HIV "
    "Condition with any status -> critical, whatever its date. A current serious or systemic "
    "infection (acute-infection-condition: sepsis, pneumonia, urinary, skin and soft tissue, "
    "viral incl. herpes zoster and COVID-19, invasive fungal) with onset or recorded date "
    "within infection_recent_window days (policy) before the start -> critical; an older or "
    "undated one, or a minor one (minor-infection-condition: superficial fungal, upper "
    "respiratory, otitis) -> warning to confirm it is resolved. Else a current Condition this "
    "check did not recognise (not a finding, situation or procedure) whose text or display "
    "names an infection (keywords in terminology/condition-keywords.json, negations and "
    "non-disease phrases scoped to their clause) -> warning to review it (unknown).",
    indicator="critical / warning",
    source="label",
    citation="PI section 4 (Contraindications: infection with HIV; active infection)",
    check=check_active_infection,
    value_sets=(
        "active-tuberculosis-condition",
        "acute-infection-condition",
        "minor-infection-condition",
        "hepatitis-b-condition",
        "hepatitis-c-condition",
        "hiv-condition",
    ),
    policy_keys=("infection_recent_window",),
    override_reasons=("action-completed", "recipient-disagrees-evidence", "risk-benefit-ratio"),
)
