"""Lab results as the checks use them: final, dated, and read by the result grammar.

How a result is read (interpretation, coded value, quantity, text) lives in one module,
domain/result_grammar.py; this module keeps the names the checks use (Meaning, LabResult,
read_meaning, newest...) and words a result as evidence data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .fhirdata import DateSpan, first_date, reference_of
from .findings import Evidence
from .result_grammar import Kind, Meaning, Reading, read_result
from .terminology import ValueSet

__all__ = [
    "FINAL_STATUSES",
    "LabResult",
    "Meaning",
    "is_final",
    "newest",
    "read",
    "read_meaning",
    "result_date",
    "within",
]

FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
READ_PREFIX = "read-"
"""Evidence kind of how a result was read: read-<result_grammar.READ_HOWS>."""


@dataclass(frozen=True)
class LabResult:
    """A final result with its date, its meaning and how the meaning was read (`read_from`, a
    key of the [evidence] `read-<key>` lines), the value it read (readable units) and the raw
    codes (evidence facts only)."""

    resource: dict[str, Any]
    test: str
    when: DateSpan
    meaning: Meaning
    read_from: str
    value: str = ""
    codes: tuple[str, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    """Named values of the `read-<read_from>` line (the components of a panel, a cut-off)."""

    @property
    def reference(self) -> str:
        return reference_of(self.resource)

    def describe(self) -> tuple[Evidence, ...]:
        """The result as an evidence part (worded by [evidence] lab-result of wording.toml):
        test, meaning, date, value in readable units and how it was read; the raw codes ride
        along in the facts."""
        kind = READ_PREFIX + self.read_from
        how = Evidence(kind, dict(self.values))
        facts: dict[str, str | int | tuple[Evidence, ...]] = {
            "test": self.test,
            "meaning": self.meaning.value,
            "when": str(self.when),
            "value": self.value or "no value",
            "how": (how,),
            "reference": self.reference,
            "codes": "; ".join(self.codes),
        }
        return (Evidence("lab-result", facts),)


def read_meaning(
    observation: dict[str, Any], nucleic_acid: bool = False, vs: ValueSet | None = None
) -> tuple[Meaning, str]:
    """What the result says, and how it was read (the grammar's `how` key)."""
    reading = read(observation, Kind.NUCLEIC_ACID if nucleic_acid else Kind.QUALITATIVE, vs)
    return reading.meaning, reading.how


def read(observation: dict[str, Any], kind: Kind, vs: ValueSet | None = None) -> Reading:
    """The grammar's full reading of one result."""
    return read_result(observation, kind, vs)


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
