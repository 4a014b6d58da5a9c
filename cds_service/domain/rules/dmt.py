"""Prior disease-modifying therapies: Lemtrada is generally reserved for >= 2 (label section 1)."""

from __future__ import annotations

from ..fhirdata import reference_of
from ..findings import Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import MedicationUse, PatientRecord, Unreadable
from ..terminology import ValueSet, value_set

TOPIC = "prior-dmt"

NOT_TAKEN = {
    "MedicationStatement": {"not-taken", "entered-in-error", "intended"},
    "MedicationRequest": {"entered-in-error", "draft", "cancelled"},
    "MedicationAdministration": {"not-done", "entered-in-error"},
}


def match_ingredient(use: MedicationUse, vs: ValueSet) -> tuple[str, str] | None:
    """(ingredient, how it matched) when a medication use is in the value set, by code or by
    name."""
    code = vs.matches_any(list(use.codes))
    if code is not None:
        ingredient = vs.ingredient_of_code.get(code, vs.display(code))
        return ingredient, f"RxNorm {code[1]}"
    named = vs.name_in(use.words)
    if named is not None:
        name, ingredient = named
        return ingredient, f'name "{name}" in text'
    return None


def taken(use: MedicationUse) -> bool:
    """False for uses that record a medication not taken (not-taken, not-done, cancelled, draft)."""
    return use.status not in NOT_TAKEN.get(use.resource_type, set())


def check_prior_dmt(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Count distinct prior MS DMT ingredients (alemtuzumab and corticosteroids never count)."""
    needed = policy["min_prior_dmts"]
    dmt = value_set("ms-dmt-rxnorm")
    uses, unreadable = record.medication_uses()
    found: dict[str, list[str]] = {}
    bad: list[Unreadable] = list(unreadable)
    for use in uses:
        if not taken(use):
            continue
        matched = match_ingredient(use, dmt)
        if matched is None:
            continue
        problem = record.problem(use.resource)
        if problem is not None:
            bad.append(Unreadable(reference_of(use.resource), problem))
            continue
        ingredient, how = matched
        when = f"from {use.start}" if use.start else "undated"
        found.setdefault(ingredient, []).append(
            f"{ingredient}: {use.resource_type} {when} ({reference_of(use.resource)}; "
            f"matched by {how})"
        )
    evidence = tuple(line for ingredient in sorted(found) for line in found[ingredient])
    count = len(found)
    if count >= needed:
        return Finding(TOPIC, Status.MET, Severity.INFO,
                       f"{count} prior MS disease-modifying therapies on file",
                       evidence=evidence, unreadable=tuple(bad))
    names = ", ".join(sorted(found)) or "none"
    return Finding(
        TOPIC, Status.NOT_MET, Severity.WARNING,
        f"{count} prior MS DMT found ({names[:60]}); Lemtrada is generally reserved for {needed}+",
        explanation=(
            "The label reserves alemtuzumab for patients with an inadequate response to two or "
            "more drugs indicated for MS. Document prior therapies (including those given "
            "elsewhere) or record why alemtuzumab is chosen now.",
        ),
        evidence=evidence,
        unreadable=tuple(bad),
    )
