"""Current conditions: the shared reading of Condition evidence, and the checks for a current
thyroid disorder or malignancy (label section 5).

Which diagnoses are current:

A Condition counts as current when its clinicalStatus is active, recurrence or relapse. A
Condition without clinicalStatus and without an abatement date could be current, so it counts too
(FHIR R4 con-3/con-4: the status may be left out, an abated condition must not be active); the
evidence line says the status was not recorded. Refuted diagnoses never count; entered-in-error
ones were dropped by PatientRecord.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..fhirdata import Code, Malformed, codings, first_date, normalise_code, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..lab_values import Judgement
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..terminology import ValueSet, value_set
from .base import Check, Rule
from .labs import current_values, dated_values

CURRENT = frozenset({"active", "recurrence", "relapse"})
UNRECORDED = "unrecorded"
"""The status of a Condition or allergy that may be current because none was recorded."""
THYROID = "thyroid-disorder"
MALIGNANCY = "malignancy"
ABATEMENT = (
    "abatementDateTime",
    "abatementPeriod",
    "abatementAge",
    "abatementRange",
    "abatementString",
)


@dataclass(frozen=True)
class ConditionHit:
    """A current diagnosis that matched, with the code that matched and how to name it."""

    resource: dict[str, Any]
    code: Code
    name: str
    status: str
    written: str = ""
    """The code as the record writes it (ICD-10-CM with its dot)."""
    server_root: tuple[Code, str] | None = None
    """(root concept, value set title) when a terminology server, not the local file, placed
    the code in the value set."""

    @property
    def reference(self) -> str:
        return reference_of(self.resource)

    def evidence(self, kinds: tuple[str, str] = ("condition", "condition-undated")) -> Evidence:
        """The evidence line of this diagnosis: the first of `kinds` ([evidence] of wording.toml),
        or the second when the record gives neither onset nor recorded date."""
        when = first_date(self.resource, "onsetDateTime", "onsetPeriod.start", "recordedDate")
        system = (
            "ICD-10-CM"
            if "icd-10" in self.code[0]
            else "SNOMED CT"
            if "snomed" in self.code[0]
            else self.code[0]
        )
        return Evidence(
            kinds[0] if when else kinds[1],
            {
                "condition": self.name,
                "system": system,
                "code": self.written or self.code[1]
                if self.server_root is None
                else (
                    Evidence(
                        "recognised-by-terminology-server",
                        {
                            "code": self.written or self.code[1],
                            "root": self.server_root[0][1],
                            "value_set": self.server_root[1],
                        },
                    ),
                ),
                "status": status_fact(self.status),
                "when": str(when),
                "reference": self.reference,
            },
        )


def status_fact(status: str) -> str | tuple[Evidence, ...]:
    """A clinical status as an evidence fact: the code, or the worded `status-not-recorded`."""
    return (Evidence("status-not-recorded"),) if status == UNRECORDED else status


def _codes_of(concept: Any) -> list[Code]:
    try:
        return codings(concept)
    except Malformed:
        return []


def clinical_status(condition: dict[str, Any]) -> str | None:
    """The clinicalStatus code (active, recurrence, relapse, inactive, remission, resolved) or
    None."""
    for _, code in _codes_of(condition.get("clinicalStatus")):
        return code
    return None


def refuted(resource: dict[str, Any]) -> bool:
    return any(code == "refuted" for _, code in _codes_of(resource.get("verificationStatus")))


def current_status(condition: dict[str, Any], also: frozenset[str] = frozenset()) -> str | None:
    """How the condition is current ('active', 'relapse (provisional)', UNRECORDED, ...), or None
    when it is not."""
    if refuted(condition):
        return None
    status = clinical_status(condition)
    if status is None:
        if any(key in condition for key in ABATEMENT):
            return None
        return UNRECORDED
    if status in CURRENT or status in also:
        unconfirmed = [
            c
            for _, c in _codes_of(condition.get("verificationStatus"))
            if c in ("unconfirmed", "provisional", "differential")
        ]
        return status + (f" ({unconfirmed[0]})" if unconfirmed else "")
    return None


def _display(condition: dict[str, Any], code: Code, vs: ValueSet | None) -> str:
    if vs is not None and code in vs.codes:
        return vs.display(code)
    concept = condition.get("code")
    if isinstance(concept, dict):
        for coding in concept.get("coding") or ():
            if (
                isinstance(coding, dict)
                and coding.get("code")
                and isinstance(coding.get("display"), str)
            ):
                return str(coding["display"])
        if isinstance(concept.get("text"), str):
            return str(concept["text"])
    return code[1]


def _written(condition: dict[str, Any], code: Code) -> str:
    concept = condition.get("code")
    for coding in concept.get("coding") or () if isinstance(concept, dict) else ():
        if (
            isinstance(coding, dict)
            and isinstance(coding.get("system"), str)
            and isinstance(coding.get("code"), str)
            and normalise_code(coding["system"], coding["code"]) == code
        ):
            return str(coding["code"])
    return code[1]


def shorten(text: str, limit: int = 50) -> str:
    """A name short enough for a card summary, cut at a word."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def current_conditions(
    record: PatientRecord,
    value_sets: Iterable[ValueSet],
    extra_match: Callable[[Code], bool] | None = None,
    also: frozenset[str] = frozenset(),
) -> tuple[list[ConditionHit], list[Unreadable]]:
    """Current Conditions coded in any of the value sets (or accepted by `extra_match`).

    Unreadable evidence: Conditions whose code could not be read at all (they might be one of
    these), and matching Conditions that fail R4 validation.
    """
    sets = list(value_sets)
    unreadable: list[Unreadable] = list(record.uncoded.get("Condition", ()))
    candidates: dict[int, dict[str, Any]] = {}
    for vs in sets:
        for condition in record.coded("Condition", vs):
            candidates.setdefault(id(condition), condition)
    if extra_match is not None:
        for condition in record.by_type.get("Condition", ()):
            if any(extra_match(code) for code in _codes_of(condition.get("code"))):
                candidates.setdefault(id(condition), condition)
    hits: list[ConditionHit] = []
    for condition in candidates.values():
        problem = record.problem(condition)
        if problem is not None:
            unreadable.append(Unreadable(reference_of(condition), problem))
            continue
        status = current_status(condition, also)
        if status is None:
            continue
        codes = _codes_of(condition.get("code"))
        matched: tuple[Code, ValueSet | None] | None = None
        for vs in sets:
            code = record.first_member(codes, vs)
            if code is not None:
                matched = (code, vs)
                break
        if matched is None and extra_match is not None:
            code = next(c for c in codes if extra_match(c))
            matched = (code, None)
        assert matched is not None
        code, vs_of = matched
        root = None if vs_of is None else record.server_root(code, vs_of)
        hits.append(
            ConditionHit(
                condition,
                code,
                _display(condition, code, vs_of),
                status,
                _written(condition, code),
                None if root is None or vs_of is None else (root, vs_of.title.split(" (")[0]),
            )
        )
    return hits, unreadable


# -- checks -------------------------------------------------------------------------------------


def current_condition_check(
    topic: str,
    value_set_id: str,
    extra_match: Callable[[Code], bool] | None = None,
    words: str | None = None,
) -> Check:
    """The shape of a warning for a current Condition in one value set: reason `current` with the
    first hit's name as {condition}, else what unassessed.nothing_found says (a warning to review
    a current Condition whose name says `words`, 'none-recognised' or 'none'); sentences in
    cds_service/wording.toml."""

    def check(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
        hits, unreadable = current_conditions(
            record, [value_set(value_set_id)], extra_match=extra_match
        )
        if hits:
            return Finding(
                topic,
                Status.NOT_MET,
                Severity.WARNING,
                reason="current",
                facts={"condition": shorten(hits[0].name)},
                evidence=tuple(h.evidence() for h in hits),
                unreadable=tuple(unreadable),
            )
        # None recognised: the safety net and 'none recognised' (rules/unassessed.py, which
        # imports this module: imported here, when the check runs).
        from .unassessed import nothing_found

        return nothing_found(topic, record, unreadable, words)

    check.__name__ = check.__qualname__ = f"check_{topic.replace('-', '_')}"
    check.__doc__ = f"Warning for a current Condition in {value_set_id}."
    return check


# -- checks -------------------------------------------------------------------------------------


def condition_rule(
    *,
    topic: str,
    value_set_id: str,
    title: str,
    logic: str,
    citation: str,
    override_reasons: tuple[str, ...],
    source: str = "label",
    extra_match: Callable[[Code], bool] | None = None,
    words: str | None = None,
) -> Rule:
    """The declaration of a warning for a current Condition in one value set (a table row)."""
    return Rule(
        topic=topic,
        title=title,
        logic=logic,
        indicator="warning",
        source=source,
        citation=citation,
        check=current_condition_check(topic, value_set_id, extra_match, words),
        value_sets=(value_set_id,),
        override_reasons=override_reasons,
    )


_thyroid_condition = current_condition_check(THYROID, "thyroid-disorder-condition")


def newest_tsh(
    record: PatientRecord, order: OrderContext, policy: Policy
) -> tuple[Evidence | None, list[Unreadable]]:
    """The newest TSH within the screening lookback as an evidence line when the lab flags it or
    it lies outside the lab's range (lab_values.Measurement.judgement), else None; and the TSH
    results that could not be read (a value without a unit is not normal)."""
    values, unreadable = dated_values(record, "tsh-loinc")
    current = current_values(values, order.t0, policy["screening_lookback"])
    if not current:
        return None, unreadable
    newest = max(current, key=lambda v: v.when.earliest)
    m = newest.measurement
    judgement = m.judgement
    if judgement is Judgement.UNREADABLE:
        why = f"{newest.test}: {judgement.value}, {m.value_text()} without a unit"
        return None, [*unreadable, Unreadable(m.reference, why)]
    if not judgement.abnormal:
        return None, unreadable
    return Evidence(
        "tsh-out-of-range",
        {
            "test": newest.test,
            "value": m.value_text(),
            "judgement": judgement.value,
            "range": m.range_text(),
            "when": str(newest.when),
            "reference": m.reference,
        },
    ), unreadable


def check_thyroid_disorder(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """A current thyroid Condition, or a TSH outside the lab's range: warning naming the value.
    The Condition's finding is kept as it is (with the TSH line added to its evidence)."""
    finding = _thyroid_condition(record, order, policy)
    tsh, unreadable = newest_tsh(record, order, policy)
    if unreadable:
        finding = replace(finding, unreadable=(*finding.unreadable, *unreadable))
    if tsh is None:
        return finding
    if finding.status is Status.MET:
        return Finding(
            THYROID,
            Status.NOT_MET,
            Severity.WARNING,
            reason="tsh-out-of-range",
            facts={"tsh": str(tsh.facts["value"])},
            evidence=(tsh,),
            unreadable=finding.unreadable,
        )
    return replace(finding, evidence=(*finding.evidence, tsh))


THYROID_DISORDER_RULE = Rule(
    topic=THYROID,
    title="No current thyroid disorder",
    logic="Current Condition in the thyroid-disorder value set (hypothyroidism, "
    "hyperthyroidism/Graves, thyroiditis), or the newest TSH within `screening_lookback` days "
    "flagged abnormal by the lab or outside its reference range -> warning naming the value.",
    indicator="warning",
    source="label",
    citation="PI section 5 (thyroid disorders: in patients with an ongoing thyroid disorder, "
    "administer only if the potential benefit justifies the potential risks; thyroid function "
    "tests before initiation)",
    check=check_thyroid_disorder,
    value_sets=("thyroid-disorder-condition", "tsh-loinc"),
    policy_keys=("screening_lookback",),
    override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
)


MALIGNANCY_RULE = condition_rule(
    topic=MALIGNANCY,
    value_set_id="malignancy-condition",
    words=MALIGNANCY,
    title="No current malignancy",
    logic="Current Condition in the malignancy value set (ICD-10-CM C00-C96 with C4A, C7A and "
    "C7B by range; SNOMED CT malignant neoplasms from public expansions) -> warning. Else a "
    "current Condition this check did not recognise (not a finding, situation or procedure) "
    "whose text or display names a malignancy (keywords in terminology/condition-keywords.json, "
    "negations and non-disease phrases scoped to their clause) -> warning to review it (unknown).",
    citation="Boxed warning and PI section 5 (malignancies: use caution in patients with "
    "pre-existing or ongoing malignancies)",
    override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
)
