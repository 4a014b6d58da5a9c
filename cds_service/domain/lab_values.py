"""Numeric lab values as labs send them: quantity, unit, the lab's reference range and its flag.

Qualitative answers (positive / negative / detected...) are read by the result grammar
(results.py); this module reads numbers, and the semi-quantitative grades of a urine dipstick
(negative, trace, 1+ to 4+), because the checks compare them with thresholds.

How a value is judged (`Measurement.judgement`):

- A numeric value without a unit is unreadable, never normal: 1.4 of what?
- The lab's own flag (Observation.interpretation H/HH/L/LL/A/AA/N...) counts; a value outside the
  lab's referenceRange counts too, so a result is abnormal when either says so.
- With neither a flag nor a usable range the value is not judged (`UNKNOWN`); a check with its own
  cited number (UPCR above 200 mg/g) compares against that number instead.
- A range whose low is above its high, or whose unit differs from the value's, is unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .fhirdata import V3_INTERPRETATION, Code, Malformed, codings, concept_words, reference_of
from .terminology import ValueSet

CREATININE_MG_PER_MMOL = 113.12
"""Molar mass of creatinine (C4H7N3O), 113.12 g/mol (PubChem CID 588): 1 mmol = 113.12 mg. It
converts a urine protein/creatinine ratio in mg/mmol to mg/g (x 1000 / 113.12 = x 8.84) and a
serum creatinine in umol/L to mg/dL (/ 88.4)."""

UMOL_PER_L_PER_MG_PER_DL = 10 * 1000 / CREATININE_MG_PER_MMOL
"""1 mg/dL of creatinine = 10 mg/L = 10 000 ug/L / 113.12 ug/umol = 88.4 umol/L."""


class Judgement(Enum):
    NORMAL = "normal"
    HIGH = "high"
    LOW = "low"
    ABNORMAL = "abnormal"
    """Flagged abnormal by the lab without a direction (A, AA)."""
    UNKNOWN = "not judged"
    """A value with a unit but neither a usable reference range nor a lab flag."""
    UNREADABLE = "unreadable"
    """A numeric value without a unit (or no number at all where one was expected)."""

    @property
    def abnormal(self) -> bool:
        return self in (Judgement.HIGH, Judgement.LOW, Judgement.ABNORMAL)


_HIGH_FLAGS = frozenset({"H", "HH", "HU", ">"})
_LOW_FLAGS = frozenset({"L", "LL", "LU", "<"})
_ABNORMAL_FLAGS = frozenset({"A", "AA"})
_NORMAL_FLAGS = frozenset({"N"})

_UCUM_POWER = re.compile(r"^10\*(\d+)")
_BRACES = re.compile(r"\{([^}]*)\}")


def readable_unit(unit: str) -> str:
    """A unit as a clinician reads it: no UCUM braces or brackets ('m[IU]/L' -> 'mIU/L',
    'mL/min/{1.73_m2}' -> 'mL/min/1.73 m2', 'mg/g{creat}' -> 'mg/g', '10*3/uL' -> 'x10^3/uL')."""
    unit = unit.strip()
    if _BRACES.fullmatch(unit):
        return unit[1:-1].replace("_", " ")  # an annotation alone ('{index}'): its words

    def annotation(match: re.Match[str]) -> str:
        words = match.group(1)
        return words.replace("_", " ") if any(c.isdigit() for c in words) else ""

    text = _BRACES.sub(annotation, unit)
    text = text.replace("[", "").replace("]", "")
    text = _UCUM_POWER.sub(lambda m: f"x10^{m.group(1)}", text)
    return text.strip()


def _unit_key(unit: str) -> str:
    """A unit for comparison and conversion: annotations dropped, case folded ('mg/g{creat}' and
    'mg/g' are one unit)."""
    return _BRACES.sub("", unit).replace("[", "").replace("]", "").replace(" ", "").casefold()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _format(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Measurement:
    """One numeric or graded value: an Observation's own value or one of its components."""

    resource: dict[str, Any]
    element: dict[str, Any]
    """The Observation itself, or the component that carries the value."""
    code: Code
    value: float | None
    comparator: str
    unit: str
    """The unit as sent (Quantity.unit, else Quantity.code); empty when none."""
    unit_code: str
    low: float | None
    high: float | None
    range_problem: str
    flag: str | None
    """The lab's v3 interpretation code, if any."""

    @property
    def reference(self) -> str:
        ref = reference_of(self.resource)
        if self.element is not self.resource:
            return f"{ref} (component)"
        return ref

    @property
    def has_range(self) -> bool:
        return self.low is not None or self.high is not None

    def value_text(self) -> str:
        """'45 x10^3/uL', '<15 mg/dL', or the written text of a graded result."""
        if self.value is None:
            return grade_text(self.element) or "no value"
        unit = readable_unit(self.unit or self.unit_code)
        number = f"{self.comparator}{_format(self.value)}"
        return f"{number} {unit}".strip()

    def range_text(self) -> str:
        """'150-400 x10^3/uL', '<= 4.0', or 'no reference range'."""
        unit = readable_unit(self.unit or self.unit_code)
        if self.low is not None and self.high is not None:
            text = f"{_format(self.low)}-{_format(self.high)}"
        elif self.low is not None:
            text = f">= {_format(self.low)}"
        elif self.high is not None:
            text = f"<= {_format(self.high)}"
        else:
            return self.range_problem or "no reference range"
        return f"{text} {unit}".strip()

    @property
    def judgement(self) -> Judgement:
        """The value against the lab's flag and range (see the module docstring)."""
        if self.value is None:
            return Judgement.UNREADABLE
        if not (self.unit or self.unit_code):
            return Judgement.UNREADABLE
        by_flag: Judgement | None = None
        if self.flag in _HIGH_FLAGS:
            by_flag = Judgement.HIGH
        elif self.flag in _LOW_FLAGS:
            by_flag = Judgement.LOW
        elif self.flag in _ABNORMAL_FLAGS:
            by_flag = Judgement.ABNORMAL
        elif self.flag in _NORMAL_FLAGS:
            by_flag = Judgement.NORMAL
        by_range: Judgement | None = None
        if self.has_range:
            if self.low is not None and self.value < self.low:
                by_range = Judgement.LOW
            elif self.high is not None and self.value > self.high:
                by_range = Judgement.HIGH
            else:
                by_range = Judgement.NORMAL
        if by_flag is not None and by_flag.abnormal:
            return by_flag
        if by_range is not None:
            return by_range
        return by_flag or Judgement.UNKNOWN


def _flag(element: dict[str, Any]) -> str | None:
    interpretations = element.get("interpretation")
    if not isinstance(interpretations, list):
        return None
    for concept in interpretations:
        try:
            for system, code in codings(concept):
                if system == V3_INTERPRETATION:
                    return code
        except Malformed:
            continue
    return None


def _range(element: dict[str, Any], unit: str) -> tuple[float | None, float | None, str]:
    """(low, high, problem) of the first reference range meant as normal (no type, or type
    'normal'); a range that cannot be used gives (None, None, why)."""
    ranges = element.get("referenceRange")
    if not isinstance(ranges, list):
        return None, None, ""
    for entry in ranges:
        if not isinstance(entry, dict):
            continue
        kind = entry.get("type")
        if isinstance(kind, dict):
            try:
                kinds = {code for _, code in codings(kind)}
            except Malformed:
                kinds = set()
            if kinds and "normal" not in kinds:
                continue
        bounds: list[float | None] = []
        for side in ("low", "high"):
            quantity = entry.get(side)
            if not isinstance(quantity, dict):
                bounds.append(None)
                continue
            other = quantity.get("unit") or quantity.get("code")
            if isinstance(other, str) and unit and _unit_key(other) != _unit_key(unit):
                why = f"reference range in {readable_unit(other)}, not the result's unit"
                return None, None, why
            bounds.append(_number(quantity.get("value")))
        low, high = bounds
        if low is not None and high is not None and low > high:
            return None, None, "reference range unusable (low above high)"
        if low is not None or high is not None:
            return low, high, ""
    return None, None, ""


def _measurement(resource: dict[str, Any], element: dict[str, Any], code: Code) -> Measurement:
    quantity = element.get("valueQuantity")
    value: float | None = None
    comparator = unit = unit_code = ""
    if isinstance(quantity, dict):
        value = _number(quantity.get("value"))
        raw = quantity.get("comparator")
        comparator = raw if isinstance(raw, str) else ""
        unit = quantity["unit"] if isinstance(quantity.get("unit"), str) else ""
        unit_code = quantity["code"] if isinstance(quantity.get("code"), str) else ""
    low, high, problem = _range(element, unit or unit_code)
    flag = _flag(element)
    return Measurement(
        resource, element, code, value, comparator, unit, unit_code, low, high, problem, flag
    )


def measurements(observation: dict[str, Any], vs: ValueSet) -> list[Measurement]:
    """The values of the tests in `vs` that an Observation carries: its own value when its code is
    in the set, and each component coded in the set (a CBC or urinalysis panel sends its analytes
    as components)."""
    out: list[Measurement] = []
    try:
        own = vs.matches_any(codings(observation.get("code")))
    except Malformed:
        own = None
    if own is not None:
        out.append(_measurement(observation, observation, own))
    components = observation.get("component")
    if isinstance(components, list):
        for component in components:
            if not isinstance(component, dict):
                continue
            try:
                code = vs.matches_any(codings(component.get("code")))
            except Malformed:
                continue
            if code is not None:
                out.append(_measurement(observation, component, code))
    return out


# -- unit conversions for the cited thresholds ---------------------------------------------------

_RATIO_TO_MG_PER_G = {
    "mg/g": 1.0,
    "g/kg": 1.0,
    "mg/mg": 1000.0,
    "g/g": 1000.0,
    "mg/mmol": 1000.0 / CREATININE_MG_PER_MMOL,
    "g/mol": 1000.0 / CREATININE_MG_PER_MMOL,
}


def ratio_mg_per_g(measurement: Measurement) -> float | None:
    """A urine protein/creatinine ratio in mg/g, converted from mg/mg or g/g (x 1000) or mg/mmol
    (x 8.84, by creatinine's molar mass); None when the unit is absent or not a mass ratio."""
    if measurement.value is None:
        return None
    for unit in (measurement.unit_code, measurement.unit):
        factor = _RATIO_TO_MG_PER_G.get(_unit_key(unit)) if unit else None
        if factor is not None:
            return measurement.value * factor
    return None


def creatinine_mg_per_dl(measurement: Measurement) -> float | None:
    """A serum creatinine in mg/dL (umol/L / 88.4); None when the unit is absent or unknown."""
    if measurement.value is None:
        return None
    for unit in (measurement.unit_code, measurement.unit):
        key = _unit_key(unit) if unit else ""
        if key == "mg/dl":
            return measurement.value
        if key in ("umol/l", "µmol/l"):
            return measurement.value / UMOL_PER_L_PER_MG_PER_DL
    return None


# -- urine dipstick grades -----------------------------------------------------------------------

_GRADE_DIGIT = re.compile(r"(?<![\w.])([1-4])\s*\+")
_GRADE_PLUSES = re.compile(r"(?<![\w+])(\+{1,4})(?![\w+])")
_TRACE = re.compile(r"\btrace\b", re.I)
_NEGATIVE = re.compile(r"\b(negative|neg|nil|none|not detected|absent)\b", re.I)
_POSITIVE = re.compile(r"\b(positive|pos|present|detected|small|moderate|large)\b", re.I)


def _grade_words(element: dict[str, Any]) -> str:
    parts: list[str] = []
    if isinstance(element.get("valueString"), str):
        parts.append(element["valueString"])
    concept = element.get("valueCodeableConcept")
    if isinstance(concept, dict):
        parts.append(concept_words(concept))
    return " | ".join(p for p in parts if p)


def grade_text(element: dict[str, Any]) -> str:
    """The written grade of a dipstick result (its text or the first display), for evidence."""
    words = _grade_words(element)
    return words.split(" | ")[0] if words else ""


def dipstick_grade(element: dict[str, Any]) -> float | None:
    """A dipstick grade: 0 negative, 0.5 trace, 1 to 4 for 1+ to 4+ ('+', '++' too); a bare
    'positive' (or small/moderate/large) is read as 1 (at least 1+); None when no grade is
    written. A numeric dipstick (mg/dL) is a Measurement, not a grade."""
    words = _grade_words(element)
    if not words:
        return None
    digit = _GRADE_DIGIT.search(words)
    if digit:
        return float(digit.group(1))
    pluses = _GRADE_PLUSES.search(words)
    if pluses:
        return float(len(pluses.group(1)))
    if _TRACE.search(words):
        return 0.5
    if _NEGATIVE.search(words):
        return 0.0
    if _POSITIVE.search(words):
        return 1.0
    return None
