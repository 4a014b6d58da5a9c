"""Current Conditions that no check assessed, and the safety net for what their names say.

A current diagnosis that no condition value set of any rule recognises is not evidence of
absence: the checklist lists these (an item to confirm, no card of its own), and the checks whose
subject could hide among them (thyroid disorder, malignancy, active infection) say "none
recognised" instead of "none on file". The malignancy and active-infection checks also read the
names of the current Conditions they did not recognise: a name that says malignancy or infection
(terminology/condition-keywords.json) gives a warning to review it.

What is left out: Conditions coded as findings, situations, procedures and other non-disorder
concepts (the SNOMED CT semantic tag that ends a display or text, as Synthea writes them:
'Stress (finding)', 'History of ... (situation)') and ICD-10-CM chapters Z (history, screening,
carrier state, exposure, vaccination) and V-Y (external causes): social facts, observations and
contexts, not diseases a check could assess. The list is in the keywords file.

"Current" is conditions.current_status: active, recurrence or relapse, or no status and no
abatement; never refuted (entered-in-error ones never reach a rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from ..fhirdata import ICD10CM, SNOMED, Code, DateSpan, Malformed, codings, first_date, reference_of
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..terminology import ValueSet, condition_keywords, value_set
from .base import Rule
from .conditions import current_status, shorten, status_fact

UNASSESSED = "unassessed-conditions"
CONDITION_SET_SUFFIX = "-condition"
"""Value sets whose id ends so hold diagnoses (Condition.code); the others hold tests, vaccines,
medications or result meanings."""
NAMES_SHOWN = 8
"""How many unassessed conditions the checklist names before "and N more" (display, not
clinical: every one stays countable)."""
INFECTION_WORDS = "infection"
"""A keyword class of terminology/condition-keywords.json (the other, malignancy, is named as
the malignancy check's topic)."""
NONE_RECOGNISED = "none-recognised"
REVIEW_UNRECOGNISED = "review-unrecognised"
"""Reason codes said under the topic of the check that calls `nothing_found` (thyroid-disorder,
malignancy, active-infection), worded there in wording.toml (tests/test_unrecognised_conditions.py
holds each such topic to it)."""


@cache
def assessed_condition_sets() -> tuple[ValueSet, ...]:
    """Every condition value set some rule of the table reads (Rule.value_sets ending in
    '-condition'), so the list follows the value sets as they change."""
    from . import RULES  # the rule table imports this module: read it once it exists

    ids = sorted(
        {vs for rule in RULES for vs in rule.value_sets if vs.endswith(CONDITION_SET_SUFFIX)}
    )
    return tuple(value_set(vs_id) for vs_id in ids)


@lru_cache(maxsize=65_536)
def _in_a_condition_set(code: Code) -> bool:
    """Whether a shipped condition value set holds the code (remembered per code: problem lists
    repeat the same codes, and a bounded cache keeps a long-lived process's memory bounded)."""
    return any(code in vs for vs in assessed_condition_sets())


def assessed(codes: Sequence[Code], record: PatientRecord) -> bool:
    """Whether some check's condition value set recognises one of the codes: a shipped set, or
    the site's terminology server for this record (so a code it placed counts as assessed)."""
    if any(_in_a_condition_set(code) for code in codes):
        return True
    ids = {vs.id for vs in assessed_condition_sets()}
    placed = [members for vs_id, members in record.extra_members.items() if vs_id in ids]
    return any(code in members for members in placed for code in codes)


def _system_name(system: str) -> str:
    return "ICD-10-CM" if system == ICD10CM else "SNOMED CT" if system == SNOMED else system


def _texts(condition: dict[str, Any]) -> list[str]:
    """Condition.code's text and every coding display."""
    concept = condition.get("code")
    if not isinstance(concept, dict):
        return []
    texts = [concept["text"]] if isinstance(concept.get("text"), str) else []
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            texts.append(coding["display"])
    return texts


@dataclass(frozen=True)
class CurrentCondition:
    """A current diagnosis with what it is called, how it is coded and whether a check read it."""

    resource: dict[str, Any]
    name: str
    texts: tuple[str, ...]
    coding: tuple[str, str] | None
    """(system name, code as written) of the first coding, None when only text is given."""
    status: str
    when: DateSpan | None
    assessed: bool

    def evidence(self, word: str = "") -> Evidence:
        """Its evidence line; with `word`, the line says which word of its name was read."""
        code = (
            (Evidence("coded-as", {"system": self.coding[0], "code": self.coding[1]}),)
            if self.coding
            else (Evidence("not-coded"),)
        )
        facts: dict[str, str | int | tuple[Evidence, ...]] = {
            "condition": self.name,
            "code": code,
            "status": status_fact(self.status),
            "when": str(self.when),
            "reference": reference_of(self.resource),
            "word": word,
        }
        if word:
            return Evidence("condition-named" if self.when else "condition-named-undated", facts)
        return Evidence(
            "unassessed-condition" if self.when else "unassessed-condition-undated", facts
        )


def _first_coding(condition: dict[str, Any]) -> tuple[str, str] | None:
    concept = condition.get("code")
    for coding in concept.get("coding") or () if isinstance(concept, dict) else ():
        if (
            isinstance(coding, dict)
            and isinstance(coding.get("system"), str)
            and isinstance(coding.get("code"), str)
        ):
            return _system_name(coding["system"]), str(coding["code"])
    return None


def current_diseases(record: PatientRecord) -> list[CurrentCondition]:
    """Every current Condition that is a disease (findings, situations, procedures, history and
    screening codes left out), newest onset or recorded date first, each marked assessed or
    not. Read once per record: four checks ask."""
    return record.once("current-diseases", _current_diseases)


def _current_diseases(record: PatientRecord) -> list[CurrentCondition]:
    keywords = condition_keywords()
    out: list[CurrentCondition] = []
    for condition in record.by_type.get("Condition", ()):
        status = current_status(condition)
        if status is None:
            continue
        try:
            codes = codings(condition.get("code"))
        except Malformed:
            continue  # an unreadable code is reported by the checks as unreadable evidence
        texts = _texts(condition)
        if any(keywords.left_out_display(text) for text in texts) or any(
            system == ICD10CM and code.startswith(keywords.left_out_icd10cm)
            for system, code in codes
        ):
            continue
        out.append(
            CurrentCondition(
                resource=condition,
                name=texts[0] if texts else reference_of(condition),
                texts=tuple(texts),
                coding=_first_coding(condition),
                status=status,
                when=first_date(condition, "onsetDateTime", "onsetPeriod.start", "recordedDate"),
                assessed=assessed(codes, record),
            )
        )
    # Newest first (what a pharmacist reads first), undated last; stable for equal dates.
    return sorted(
        out, key=lambda c: (c.when is None, -(c.when.latest.toordinal() if c.when else 0))
    )


def unassessed_conditions(record: PatientRecord) -> list[CurrentCondition]:
    """The current diseases no check's value set recognises."""
    return [c for c in current_diseases(record) if not c.assessed]


def nothing_found(
    topic: str,
    record: PatientRecord,
    unreadable: Sequence[Unreadable] = (),
    words: str | None = None,
) -> Finding:
    """What a condition check says when none of its codes is on file (its 'none' branch).

    With a keyword class (`words`): a current disease whose name says that class (malignancy,
    infection) but which the check did not recognise is a warning to review it, never silence.
    Else 'none-recognised' when current diseases no check assessed exist (one of them could be
    what the check looks for), and 'none' ('on file') only when there are none."""
    diseases = current_diseases(record)
    if words is not None:
        keyword_class = condition_keywords().classes[words]
        named = [(c, keyword_class.named_in(" | ".join(c.texts))) for c in diseases]
        hits = [(c, word) for c, word in named if word]
        if hits:
            first = hits[0][0]
            return Finding(
                topic,
                Status.UNKNOWN,
                Severity.WARNING,
                reason=REVIEW_UNRECOGNISED,
                facts={
                    "condition": shorten(first.name),
                    "since": (Evidence("since", {"when": str(first.when)}),)
                    if first.when
                    else (Evidence("since-unknown"),),
                },
                evidence=tuple(c.evidence(word) for c, word in hits),
                unreadable=tuple(unreadable),
            )
    unassessed = [c for c in diseases if not c.assessed]
    if unassessed:
        return Finding(
            topic,
            Status.MET,
            Severity.INFO,
            reason=NONE_RECOGNISED,
            facts={"unassessed": len(unassessed)},
            unreadable=tuple(unreadable),
        )
    return Finding(topic, Status.MET, Severity.INFO, reason="none", unreadable=tuple(unreadable))


def check_unassessed_conditions(
    record: PatientRecord, order: OrderContext, policy: Policy
) -> Finding:
    """An item to confirm (not met, info: the checklist's row, no card) listing the current
    diseases no check assessed; met when there are none."""
    unassessed = unassessed_conditions(record)
    if not unassessed:
        return Finding(UNASSESSED, Status.MET, Severity.INFO, reason="none")
    shown = unassessed[:NAMES_SHOWN]
    more = len(unassessed) - len(shown)
    names = tuple(Evidence("condition-name", {"name": shorten(c.name)}) for c in shown)
    tail = (Evidence("and-more", {"count": more}),) if more else ()
    return Finding(
        UNASSESSED,
        Status.NOT_MET,
        Severity.INFO,
        reason="listed",
        facts={"count": len(unassessed), "names": names + tail},
        evidence=tuple(c.evidence() for c in shown) + tail,
    )


UNASSESSED_CONDITIONS_RULE = Rule(
    topic=UNASSESSED,
    title="Current conditions no check assessed",
    logic="Current Conditions (as for the condition checks: active/recurrence/relapse, or no "
    "status and no abatement; not refuted) whose codes are in no condition value set of any "
    "rule (the value sets ending in -condition that the rules declare), leaving out findings, "
    "situations, procedures and other non-disorder SNOMED CT concepts (by the semantic tag "
    "ending the display) and ICD-10-CM Z and V-Y codes -> an item to confirm in the checklist "
    f"(not met, info, no card of its own), naming the first {NAMES_SHOWN} and counting the rest. "
    "While any exist, the thyroid-disorder, malignancy and active-infection checks say 'none "
    "recognised', not 'none on file'.",
    indicator="info",
    source="local",
    citation="Local safety rule (issue 13): a diagnosis the service could not classify is not "
    "evidence that the patient has none of the conditions the label asks about; the pharmacist "
    "sees what was not assessed",
    check=check_unassessed_conditions,
)
