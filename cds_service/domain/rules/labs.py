"""Shared reading of lab evidence for the screening rules: current, stale and unreadable results."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .. import orderables
from ..fhirdata import Code, DateSpan, Malformed, codings, reference_of
from ..findings import Suggestion
from ..lab_values import Measurement, measurements
from ..record import PatientRecord, Unreadable
from ..result_grammar import KIND_OF_VALUE_SET, Component, Kind, component_of, read_components
from ..results import LabResult, is_final, newest, read, result_date, within
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
    out.current = _panels_read(out.current, vs)
    out.stale = _panels_read(out.stale, vs)
    return out


def _code(observation: dict[str, Any], vs: ValueSet) -> tuple[str, str] | None:
    try:
        return vs.matches_any(codings(observation.get("code")))
    except Malformed:
        return None


def _result(
    observation: dict[str, Any], vs: ValueSet, when: DateSpan, nucleic_acid: bool
) -> LabResult:
    code = _code(observation, vs)
    test = vs.display(code) if code else vs.title
    kind = Kind.NUCLEIC_ACID if nucleic_acid else KIND_OF_VALUE_SET.get(vs.id, Kind.QUALITATIVE)
    reading = read(observation, kind, vs)
    codes = ((f"LOINC {code[1]}",) if code else ()) + reading.codes
    return LabResult(
        observation, test, when, reading.meaning, reading.how, reading.value, codes, reading.values
    )


def _panels_read(results: list[LabResult], vs: ValueSet) -> list[LabResult]:
    """Panel components (QuantiFERON tubes, T-SPOT spot counts) never compete with a result:
    on a day with an overall result of the test they are dropped; on a day with only
    components they are read together by the manufacturer's rule, as one result."""
    components: dict[object, list[tuple[LabResult, Component]]] = {}
    kept: list[LabResult] = []
    for found in results:
        component = component_of(found.resource, vs)
        if component is None:
            kept.append(found)
        else:
            components.setdefault(found.when.earliest, []).append((found, component))
    overall_days = {r.when.earliest for r in kept}
    for day, parts in components.items():
        if day in overall_days:
            continue
        first = parts[0][0]
        reading = read_components([c for _, c in parts])
        codes = tuple(code for found, _ in parts for code in found.codes)
        kept.append(
            LabResult(
                first.resource,
                "QuantiFERON-TB" if parts[0][1].role.startswith("qft") else "T-SPOT.TB",
                first.when,
                reading.meaning,
                reading.how,
                reading.value,
                codes,
                reading.values,
            )
        )
    return kept


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


def _by_component_code(record: PatientRecord) -> dict[Code, list[dict[str, Any]]]:
    """Observations carrying components (panels), by each component's code: read once per
    record, so each test's value set looks only at the panels that may carry it."""
    out: dict[Code, list[dict[str, Any]]] = {}
    for observation in record.by_type.get("Observation", ()):
        components = observation.get("component")
        if not isinstance(components, list):
            continue
        for component in components:
            if not isinstance(component, dict):
                continue
            try:
                codes = codings(component.get("code"))
            except Malformed:
                continue
            for code in codes:
                panels = out.setdefault(code, [])
                if not panels or panels[-1] is not observation:
                    panels.append(observation)
    return out


def dated_values(record: PatientRecord, vs_id: str) -> tuple[list[DatedValue], list[Unreadable]]:
    """Every final, dated value of the tests in a LOINC value set, oldest first: Observations coded
    in the set and components of any Observation (a panel) coded in it. Observations failing R4
    validation are unreadable."""
    vs = value_set(vs_id)
    candidates: dict[int, dict[str, Any]] = {id(o): o for o in record.coded("Observation", vs)}
    for code, panels in record.once("observations-by-component-code", _by_component_code).items():
        if record.member(code, vs):
            for observation in panels:
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
