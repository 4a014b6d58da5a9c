"""Shared reading of lab evidence for the screening rules: current, stale and unreadable results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .. import orderables
from ..fhirdata import DateSpan, Malformed, codings, reference_of
from ..findings import Suggestion
from ..lab_values import Measurement, measurements
from ..record import PatientRecord, Unreadable
from ..results import LabResult, is_final, newest, read_meaning, result_date, within
from ..terminology import ValueSet, value_set


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
    for observation in record.coded("Observation", vs):
        if not is_final(observation):
            # Preliminary or cancelled results do not count; a garbled status is unreadable.
            problem = record.problem(observation)
            if problem is not None:
                out.unreadable.append(Unreadable(reference_of(observation), problem))
            continue
        when = result_date(observation)
        current = when is not None and (lookback_days is None or within(when, t0, lookback_days))
        if when is not None and not current:
            # Too old to satisfy the check whatever it says: described, not validated.
            out.stale.append(_result(observation, vs, when, nucleic_acid))
            continue
        problem = record.problem(observation)
        if problem is not None:
            out.unreadable.append(Unreadable(reference_of(observation), problem))
        elif when is None:
            out.unreadable.append(Unreadable(reference_of(observation), "result has no date"))
        else:
            out.current.append(_result(observation, vs, when, nucleic_acid))
    return out


def _result(
    observation: dict[str, Any], vs: ValueSet, when: DateSpan, nucleic_acid: bool
) -> LabResult:
    try:
        code = vs.matches_any(codings(observation.get("code")))
    except Malformed:
        code = None
    test = f"{vs.display(code)} (LOINC {code[1]})" if code else vs.title
    meaning, read_from = read_meaning(observation, nucleic_acid)
    return LabResult(observation, test, when, meaning, read_from)


def order_test(key: str, wording: str, **facts: str | int) -> Suggestion:
    """A suggestion to order the lab test `key` of terminology/orderables.json (its LOINC code and
    display there), worded by [suggestion.<wording>] of cds_service/wording.toml (its label,
    reason, and a shorter display where the card words the test differently)."""
    coding = orderables.coding(key)
    return Suggestion(
        key=key,
        label="",
        kind="lab",
        code=(coding["system"], coding["code"]),
        display=coding["display"],
        wording=wording,
        facts=facts,
    )


@dataclass(frozen=True)
class DatedValue:
    """A value of one test (lab_values.Measurement) with its result date and the test's name."""

    measurement: Measurement
    when: DateSpan
    test: str


def dated_values(record: PatientRecord, vs_id: str) -> tuple[list[DatedValue], list[Unreadable]]:
    """Every final, dated value of the tests in a LOINC value set, oldest first: Observations coded
    in the set and components of any Observation (a panel) coded in it. Observations failing R4
    validation are unreadable."""
    vs = value_set(vs_id)
    candidates: dict[int, dict[str, Any]] = {id(o): o for o in record.coded("Observation", vs)}
    for observation in record.by_type.get("Observation", ()):
        if isinstance(observation.get("component"), list):
            candidates.setdefault(id(observation), observation)
    out: list[DatedValue] = []
    unreadable: list[Unreadable] = []
    for observation in candidates.values():
        found = measurements(observation, vs)
        if not found or not is_final(observation):
            continue
        problem = record.problem(observation)
        when = result_date(observation)
        if problem is not None:
            unreadable.append(Unreadable(reference_of(observation), problem))
            continue
        if when is None:
            continue
        for measurement in found:
            test = f"{vs.display(measurement.code)} (LOINC {measurement.code[1]})"
            out.append(DatedValue(measurement, when, test))
    out.sort(key=lambda v: v.when.earliest)
    return out, unreadable


def current_values(values: list[DatedValue], t0: date, days: int) -> list[DatedValue]:
    """The values dated no more than `days` before T0 (as `lab_results` counts them)."""
    return [v for v in values if within(v.when, t0, days)]
