"""Tolerant readers for raw FHIR JSON: codings, dates and references.

EHRs send imperfect JSON; these helpers never raise on a wrong shape, they report it,
so a rule can call the evidence unreadable instead of crashing or ignoring it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

CVX = "http://hl7.org/fhir/sid/cvx"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

Code = tuple[str, str]
"""A (system, code) pair, normalised with `normalise_code`."""

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


class Malformed(ValueError):
    """A FHIR element does not have the shape FHIR R4 gives it."""


def normalise_code(system: str, code: str) -> Code:
    """Make codes comparable: CVX without leading zeros, ICD-10-CM upper case without dots."""
    code = code.strip()
    if system == CVX:
        code = code.lstrip("0") or "0"
    elif system == ICD10CM:
        code = code.replace(".", "").upper()
    return (system.strip(), code)


def codings(concept: Any) -> list[Code]:
    """The normalised (system, code) pairs of a CodeableConcept; raises Malformed on a wrong
    shape."""
    if concept is None:
        return []
    if not isinstance(concept, dict):
        raise Malformed("CodeableConcept is not an object")
    raw = concept.get("coding", [])
    if not isinstance(raw, list):
        raise Malformed("coding is not a list")
    out: list[Code] = []
    for coding in raw:
        if not isinstance(coding, dict):
            raise Malformed("coding entry is not an object")
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str):
            out.append(normalise_code(system, code))
        elif (
            system is not None
            and not isinstance(system, str)
            or code is not None
            and not isinstance(code, str)
        ):
            raise Malformed("coding system/code is not a string")
    return out


def concept_words(concept: Any) -> str:
    """The text and display strings of a CodeableConcept, joined, for name matching."""
    if not isinstance(concept, dict):
        return ""
    parts: list[str] = []
    text = concept.get("text")
    if isinstance(text, str):
        parts.append(text)
    raw = concept.get("coding")
    if isinstance(raw, list):
        for coding in raw:
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                parts.append(coding["display"])
    return " | ".join(parts)


@dataclass(frozen=True, order=True)
class DateSpan:
    """The days a FHIR date may mean: one day for a full date, a month or year for partial ones."""

    earliest: date
    latest: date

    @property
    def exact(self) -> bool:
        return self.earliest == self.latest

    def __str__(self) -> str:
        if self.exact:
            return self.earliest.isoformat()
        if self.earliest.month == 1 and self.latest.month == 12:
            return f"{self.earliest.year}"
        return self.earliest.strftime("%Y-%m")


def parse_date(value: Any) -> DateSpan | None:
    """Read a FHIR date/dateTime/instant as written (its local calendar day); None if unreadable."""
    if not isinstance(value, str):
        return None
    match = _DATE.match(value)
    if not match:
        return None
    year, month, day = match.groups()
    try:
        if day:
            d = date(int(year), int(month), int(day))
            return DateSpan(d, d)
        if month:
            first = date(int(year), int(month), 1)
            nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
            return DateSpan(first, nxt - timedelta(days=1))
        return DateSpan(date(int(year), 1, 1), date(int(year), 12, 31))
    except ValueError:
        return None


def first_date(resource: dict[str, Any], *paths: str) -> DateSpan | None:
    """The first readable date among dotted element paths (e.g. 'effectivePeriod.start')."""
    for path in paths:
        node: Any = resource
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        span = parse_date(node)
        if span is not None:
            return span
    return None


def reference_of(resource: dict[str, Any]) -> str:
    """A short human/machine name for a resource: 'Observation/abc' (or its type alone)."""
    rtype = resource.get("resourceType", "Resource")
    rid = resource.get("id")
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid else str(rtype)


def add_months(day: date, months: int) -> date:
    """Calendar month arithmetic, clamping to the month's last day (Jan 31 + 1 month =
    Feb 28/29)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    for d in (day.day, 30, 29, 28):
        try:
            return date(year, month, d)
        except ValueError:
            continue
    raise ValueError(day)  # pragma: no cover - unreachable


def years_between(born: date, on: date) -> int:
    """Completed years of age on a day."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
