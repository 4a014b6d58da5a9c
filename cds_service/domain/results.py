"""Reading a qualitative lab result: positive, negative or indeterminate, and from where.

Order of reading (issue #2): `interpretation`, then `valueCodeableConcept` codes (SNOMED / LOINC
answers) and its text, then `valueString`. A result that says nothing readable is indeterminate.
For nucleic-acid tests a quantity below the detection limit (`<`) or zero reads as not detected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Any

from .fhirdata import DateSpan, Malformed, codings, first_date, reference_of
from .terminology import value_set

FINAL_STATUSES = frozenset({"final", "amended", "corrected"})

_NEGATIVE_TEXT = re.compile(
    r"\b(non[- ]?reactive|not detected|undetect(?:ed|able)|negative|neg|absent|nr)\b", re.I
)
_INDETERMINATE_TEXT = re.compile(
    r"\b(indeterminate|equivocal|inconclusive|borderline|invalid|ind)\b", re.I
)
_POSITIVE_TEXT = re.compile(r"\b(reactive|detected|positive|pos|present)\b", re.I)


class Meaning(Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    INDETERMINATE = "indeterminate"


@dataclass(frozen=True)
class LabResult:
    """A final lab result with its date, meaning and how the meaning was read."""

    resource: dict[str, Any]
    test: str
    when: DateSpan
    meaning: Meaning
    read_from: str

    @property
    def reference(self) -> str:
        return reference_of(self.resource)

    def describe(self) -> str:
        """The result in words; the resource it came from goes in the Evidence's `reference`
        fact (the checklist extension), never in a card's text."""
        return f"{self.test} {self.meaning.value} on {self.when}"


def _meaning_of_codes(codes: list[tuple[str, str]]) -> Meaning | None:
    for meaning, vs_id in (
        (Meaning.POSITIVE, "result-positive"),
        (Meaning.NEGATIVE, "result-negative"),
        (Meaning.INDETERMINATE, "result-indeterminate"),
    ):
        if value_set(vs_id).matches_any(codes):
            return meaning
    return None


def _meaning_of_text(text: Any) -> Meaning | None:
    if not isinstance(text, str) or not text.strip():
        return None
    if _NEGATIVE_TEXT.search(text):
        return Meaning.NEGATIVE
    if _INDETERMINATE_TEXT.search(text):
        return Meaning.INDETERMINATE
    if _POSITIVE_TEXT.search(text):
        return Meaning.POSITIVE
    return None


def read_meaning(observation: dict[str, Any], nucleic_acid: bool = False) -> tuple[Meaning, str]:
    """What the result says, and which element said it."""
    interpretations = observation.get("interpretation")
    if isinstance(interpretations, list):
        for concept in interpretations:
            try:
                meaning = _meaning_of_codes(codings(concept))
            except Malformed:
                meaning = None
            if meaning is not None:
                return meaning, "interpretation"
    concept = observation.get("valueCodeableConcept")
    if isinstance(concept, dict):
        try:
            meaning = _meaning_of_codes(codings(concept))
        except Malformed:
            meaning = None
        if meaning is not None:
            return meaning, "valueCodeableConcept"
        meaning = _meaning_of_text(concept.get("text"))
        if meaning is not None:
            return meaning, "valueCodeableConcept.text"
    meaning = _meaning_of_text(observation.get("valueString"))
    if meaning is not None:
        return meaning, "valueString"
    quantity = observation.get("valueQuantity")
    if nucleic_acid and isinstance(quantity, dict):
        value, comparator = quantity.get("value"), quantity.get("comparator")
        if comparator in ("<", "<=") or value == 0:
            return Meaning.NEGATIVE, "valueQuantity below detection"
        if isinstance(value, (int, float)) and value > 0 and comparator in (None, ">", ">="):
            return Meaning.POSITIVE, "valueQuantity (virus detected)"
    return Meaning.INDETERMINATE, "no readable result"


def result_date(observation: dict[str, Any]) -> DateSpan | None:
    return first_date(
        observation, "effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"
    )


_SEVERITY_ORDER = {Meaning.POSITIVE: 2, Meaning.INDETERMINATE: 1, Meaning.NEGATIVE: 0}


def newest(results: list[LabResult]) -> LabResult | None:
    """The newest result; on the same day the most worrying one (so ties never hide a positive)."""
    if not results:
        return None
    return max(results, key=lambda r: (r.when.earliest, _SEVERITY_ORDER[r.meaning]))


def is_final(observation: dict[str, Any]) -> bool:
    return observation.get("status") in FINAL_STATUSES


def within(span: DateSpan, t0: date, days: int) -> bool:
    """True when a dated result is no older than `days` before T0 (partial dates count their
    earliest day)."""
    return (t0 - span.earliest).days <= days
