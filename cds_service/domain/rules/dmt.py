"""Prior disease-modifying therapies: Lemtrada is generally reserved for >= 2 (label section 1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..fhirdata import Code, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import MedicationUse, PatientRecord, Unreadable
from ..terminology import ValueSet, value_set
from .base import Rule

TOPIC = "prior-dmt"

NOT_TAKEN = {
    "MedicationStatement": {"not-taken", "entered-in-error", "intended"},
    "MedicationRequest": {"entered-in-error", "draft", "cancelled"},
    "MedicationAdministration": {"not-done", "entered-in-error"},
}


@dataclass(frozen=True)
class MedicationMatch:
    """A medication use found in a value set, by RxNorm code (with its display) or by name."""

    use: MedicationUse
    ingredient: str
    code: Code | None
    code_display: str | None
    name: str | None
    """The name found in the use's text when no code matched."""

    @property
    def how(self) -> tuple[Evidence, ...]:
        """How it matched, as an evidence part (matched-by-code or matched-by-name)."""
        if self.code:
            return (Evidence("matched-by-code", {"code": self.code[1]}),)
        return (Evidence("matched-by-name", {"name": str(self.name)}),)


def match_medication(use: MedicationUse, vs: ValueSet) -> MedicationMatch | None:
    """The match of a medication use in the value set: by code first, then by name in its text."""
    code = vs.matches_any(list(use.codes))
    if code is not None:
        display = vs.display(code)
        return MedicationMatch(use, vs.ingredient_of_code.get(code, display), code, display, None)
    named = vs.name_in(use.words)
    if named is not None:
        name, ingredient = named
        return MedicationMatch(use, ingredient, None, None, name)
    return None


def matching_uses(
    record: PatientRecord, value_sets: Sequence[ValueSet], keep: Callable[[MedicationUse], bool]
) -> tuple[list[MedicationMatch], list[Unreadable]]:
    """Medication uses that `keep` admits and that one of the value sets matches (the first that
    does). A matching use whose resource is unreadable is returned as unreadable, never used;
    the record's unreadable uses come first."""
    uses, unreadable = record.medication_uses()
    bad: list[Unreadable] = list(unreadable)
    matches: list[MedicationMatch] = []
    for use in uses:
        if not keep(use):
            continue
        matched = next((m for m in (match_medication(use, vs) for vs in value_sets) if m), None)
        if matched is None:
            continue
        problem = record.problem(use.resource)
        if problem is not None:
            bad.append(Unreadable(reference_of(use.resource), problem))
            continue
        matches.append(matched)
    return matches, bad


def taken(use: MedicationUse) -> bool:
    """False for uses that record a medication not taken (not-taken, not-done, cancelled, draft)."""
    return use.status not in NOT_TAKEN.get(use.resource_type, set())


def check_prior_dmt(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Count distinct prior MS DMT ingredients (alemtuzumab and corticosteroids never count)."""
    needed = policy["min_prior_dmts"]
    dmt = value_set("ms-dmt-rxnorm")
    matches, bad = matching_uses(record, [dmt], taken)
    found: dict[str, list[Evidence]] = {}
    for match in matches:
        use = match.use
        found.setdefault(match.ingredient, []).append(
            Evidence(
                "prior-dmt" if use.start else "prior-dmt-undated",
                {
                    "ingredient": match.ingredient,
                    "resource_type": use.resource_type,
                    "start": str(use.start),
                    "reference": reference_of(use.resource),
                    "matched_by": match.how,
                },
            )
        )
    evidence = tuple(line for ingredient in sorted(found) for line in found[ingredient])
    count = len(found)
    if count >= needed:
        return Finding(
            TOPIC,
            Status.MET,
            Severity.INFO,
            reason="enough",
            facts={"count": count},
            evidence=evidence,
            unreadable=tuple(bad),
        )
    names = ", ".join(sorted(found)) or "none"
    return Finding(
        TOPIC,
        Status.NOT_MET,
        Severity.WARNING,
        reason="too-few",
        facts={"count": count, "names": names[:60]},
        evidence=evidence,
        unreadable=tuple(bad),
    )


PRIOR_DMT_RULE = Rule(
    topic=TOPIC,
    title="Inadequate response to {min_prior_dmts_in_words} or more MS therapies",
    logic="Distinct prior MS DMT ingredients (RxNorm code or name in text; alemtuzumab and "
    "corticosteroids excluded) in MedicationStatement/Request/Administration; fewer than "
    "the minimum -> warning listing what was found.",
    indicator="warning",
    source="label",
    citation="PI section 1 (Indications and Usage: generally reserved for inadequate response "
    "to two or more MS drugs)",
    check=check_prior_dmt,
    value_sets=("ms-dmt-rxnorm",),
    policy_keys=("min_prior_dmts",),
    override_reasons=("recipient-disagrees-evidence", "risk-benefit-ratio", "expert-contradicts"),
)
