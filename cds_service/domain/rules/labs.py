"""Shared reading of lab evidence for the screening rules: current, stale and unreadable results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from ..fhirdata import LOINC, codings, reference_of
from ..findings import Suggestion
from ..record import PatientRecord, Unreadable
from ..results import LabResult, is_final, newest, read_meaning, result_date, within
from ..terminology import value_set


@dataclass
class Results:
    """Final results of one kind of test: inside the lookback, older ones, and unreadable ones."""

    current: list[LabResult] = field(default_factory=list)
    stale: list[LabResult] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def latest(self) -> LabResult | None:
        return newest(self.current)

    @property
    def latest_stale(self) -> LabResult | None:
        return newest(self.stale)


def lab_results(
    record: PatientRecord,
    vs_id: str,
    t0: date,
    lookback_days: int | None,
    nucleic_acid: bool = False,
) -> Results:
    """Every final result of the tests in a LOINC value set, split by the lookback before T0.

    Observations whose code could not be read at all are reported as unreadable here too:
    they might be this test.
    """
    vs = value_set(vs_id)
    out = Results(unreadable=list(record.uncoded.get("Observation", ())))
    readable, unreadable = record.split_readable(record.coded("Observation", vs))
    out.unreadable.extend(unreadable)
    for observation in readable:
        if not is_final(observation):
            continue
        when = result_date(observation)
        if when is None:
            out.unreadable.append(Unreadable(reference_of(observation), "result has no date"))
            continue
        code = vs.matches_any(codings(observation.get("code")))
        test = f"{vs.display(code)} (LOINC {code[1]})" if code else vs.title
        meaning, read_from = read_meaning(observation, nucleic_acid)
        result = LabResult(observation, test, when, meaning, read_from)
        if lookback_days is None or within(when, t0, lookback_days):
            out.current.append(result)
        else:
            out.stale.append(result)
    return out


def order_test(key: str, loinc: str, display: str, why: str) -> Suggestion:
    """A suggestion to order a lab test by its LOINC code."""
    return Suggestion(key=key, label=f"Order {display}", kind="lab", code=(LOINC, loinc),
                      display=display, details={"reason": why})
