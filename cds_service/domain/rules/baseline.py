"""REMS baseline laboratory tests before alemtuzumab.

Baseline labs (boxed warning, PI section 5, REMS): CBC with differential, serum creatinine,
urinalysis with cell counts, urine protein/creatinine ratio, TSH, ALT, AST and total bilirubin,
each with a final result within the policy window before T0. A CBC with differential may also
arrive as its analytes, reported the same day.

Every newest value in the window is then read (lab_values): abnormal by the lab's flag or range,
past a cited policy number (UPCR, dipstick protein without a UPCR, hematuria, creatinine rise), or
unreadable (a number without a unit is not normal). TSH values belong to thyroid-disorder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .. import orderables
from ..findings import Evidence, Finding, Severity, Status, Suggestion
from ..lab_values import (
    Judgement,
    creatinine_mg_per_dl,
    dipstick_grade,
    measurements,
    ratio_mg_per_g,
)
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..results import LabResult, Meaning, read_meaning
from ..terminology import value_set
from .base import Rule
from .labs import DatedValue, current_values, dated_values, lab_results, order_test

BASELINE = "baseline-labs"

# (value set, orderable to suggest when missing: its short name is in
# terminology/orderables.json)
BASELINE_TESTS: tuple[tuple[str, str], ...] = (
    ("cbc-differential-loinc", "order-cbc-differential"),
    ("serum-creatinine-loinc", "order-serum-creatinine"),
    ("urinalysis-loinc", "order-urinalysis"),
    ("urine-protein-creatinine-ratio-loinc", "order-urine-protein-creatinine-ratio"),
    ("tsh-loinc", "order-tsh"),
    ("alt-loinc", "order-alt"),
    ("ast-loinc", "order-ast"),
    ("bilirubin-total-loinc", "order-bilirubin-total"),
)


def _unique(items: list[Unreadable]) -> tuple[Unreadable, ...]:
    return tuple(dict.fromkeys(items))


# The analytes of a CBC with differential reported separately (US Core, Synthea): a day with all
# five satisfies the baseline CBC. (value set, short name)
CBC_ANALYTES: tuple[tuple[str, str], ...] = (
    ("cbc-leukocytes-loinc", "white cells"),
    ("cbc-hemoglobin-loinc", "hemoglobin"),
    ("cbc-platelets-loinc", "platelets"),
    ("cbc-neutrophils-loinc", "neutrophils"),
    ("cbc-lymphocytes-loinc", "lymphocytes"),
)
CREATININE = "serum-creatinine-loinc"
UPCR = "urine-protein-creatinine-ratio-loinc"
TSH = "tsh-loinc"
DIPSTICK_PROTEIN = "urine-protein-dipstick-loinc"
URINE_BLOOD = "urine-blood-loinc"

# Tests whose newest value in the window is judged against the lab's flag and range (value set,
# short name); TSH is read here only for readability: its value belongs to thyroid-disorder.
JUDGED: tuple[tuple[str, str], ...] = (
    *CBC_ANALYTES,
    (CREATININE, "creatinine"),
    ("alt-loinc", "ALT"),
    ("ast-loinc", "AST"),
    ("bilirubin-total-loinc", "total bilirubin"),
)


@dataclass
class _Reading:
    """What the values of the baseline tests say: problems (each an evidence line and its short
    form for the headline), lines that explain without being a problem, and unreadable values."""

    problems: list[Evidence] = field(default_factory=list)
    short: list[Evidence] = field(default_factory=list)
    notes: list[Evidence] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    def problem(self, line: Evidence, short: Evidence) -> None:
        self.problems.append(line)
        self.short.append(short)


def _worry(value: DatedValue) -> float:
    """How worrying a value is, to break ties between results of one day: an abnormal value or a
    positive dipstick grade first, then an unreadable one."""
    m = value.measurement
    if m.value is None:
        grade = _graded(value)
        return 2 + grade if grade else 1
    return 2 if m.judgement.abnormal else 1 if m.judgement is Judgement.UNREADABLE else 0


def _newest(values: list[DatedValue]) -> DatedValue | None:
    """The newest value; on one day the most worrying (so a tie never hides a problem)."""
    if not values:
        return None
    return max(values, key=lambda v: (v.when.earliest, _worry(v)))


def _facts(value: DatedValue, name: str) -> dict[str, str | int]:
    m = value.measurement
    return {
        "name": name,
        "test": value.test,
        "value": m.value_text(),
        "range": m.range_text(),
        "judgement": m.judgement.value,
        "when": str(value.when),
        "reference": m.reference,
    }


def _unit_missing(value: DatedValue) -> Unreadable:
    m = value.measurement
    if m.value is None:
        return Unreadable(m.reference, f"{value.test}: {Judgement.UNREADABLE.value}, no number")
    return Unreadable(
        m.reference, f"{value.test}: {Judgement.UNREADABLE.value}, {m.value_text()} has no unit"
    )


def _judge(reading: _Reading, value: DatedValue, name: str) -> None:
    """A value against the lab's flag and range: a problem when abnormal (low platelets name the
    ITP risk), a note when nothing can judge it, unreadable without a unit."""
    judgement = value.measurement.judgement
    facts = _facts(value, name)
    if judgement is Judgement.UNREADABLE:
        reading.unreadable.append(_unit_missing(value))
    elif judgement is Judgement.UNKNOWN:
        reading.notes.append(Evidence("lab-not-judged", facts))
    elif judgement.abnormal:
        if name == "platelets" and judgement is Judgement.LOW:
            reading.problem(
                Evidence("platelets-low", facts), Evidence("short-platelets-low", facts)
            )
        else:
            reading.problem(Evidence("lab-abnormal", facts), Evidence("short-lab-abnormal", facts))


def _creatinine_rise(
    reading: _Reading, latest: DatedValue, earlier: list[DatedValue], policy: Policy
) -> None:
    """A rise of more than the policy percentage against the lowest earlier result in the
    lookback (both converted to mg/dL; results without a convertible unit are not compared)."""
    now = creatinine_mg_per_dl(latest.measurement)
    if now is None:
        return
    before = [
        (mg, v)
        for v in earlier
        if v.when.latest < latest.when.earliest
        and (mg := creatinine_mg_per_dl(v.measurement)) is not None
        and mg > 0
    ]
    if not before:
        return
    lowest, base = min(before, key=lambda pair: pair[0])
    rise = round((now / lowest - 1) * 100)
    # Rounded before comparing: 1.30 against 1.00 is a 30% rise, not 30.000000000000004%.
    if round((now / lowest - 1) * 100, 6) > policy["creatinine_rise_percent"]:
        facts: dict[str, str | int] = {
            **_facts(latest, "creatinine"),
            "rise": rise,
            "earlier_value": base.measurement.value_text(),
            "earlier_when": str(base.when),
        }
        reading.problem(
            Evidence("creatinine-rise", facts), Evidence("short-creatinine-rise", facts)
        )


def _upcr(reading: _Reading, value: DatedValue, policy: Policy) -> None:
    """UPCR above the policy number (in mg/g, converted from mg/mg or mg/mmol); a unit that
    cannot be converted falls back to the lab's flag and range."""
    mg_per_g = ratio_mg_per_g(value.measurement)
    facts = {**_facts(value, "UPCR"), "mg_per_g": f"{mg_per_g or 0:.0f}"}
    if mg_per_g is None:
        _judge(reading, value, "UPCR")
        return
    if mg_per_g > policy["upcr_threshold"]:
        reading.problem(Evidence("upcr-above-threshold", facts), Evidence("short-upcr", facts))
    elif value.measurement.judgement.abnormal:
        reading.problem(Evidence("lab-abnormal", facts), Evidence("short-lab-abnormal", facts))


def _note_text(resource: dict[str, Any]) -> str:
    notes = resource.get("note")
    if not isinstance(notes, list):
        return ""
    texts = [n.get("text") for n in notes if isinstance(n, dict)]
    return "; ".join(t.strip() for t in texts if isinstance(t, str) and t.strip())


def _graded(value: DatedValue) -> float | None:
    """A dipstick grade written in the result, else the qualitative reading of the result
    (positive: at least 1+, negative: 0); None when neither can be read."""
    grade = dipstick_grade(value.measurement.element)
    if grade is not None:
        return grade
    meaning, _ = read_meaning(value.measurement.element)
    if meaning is Meaning.POSITIVE:
        return 1.0
    if meaning is Meaning.NEGATIVE:
        return 0.0
    return None


def _no_grade(value: DatedValue) -> Unreadable:
    return Unreadable(
        value.measurement.reference, f"{value.test}: {Judgement.UNREADABLE.value}, no grade"
    )


def _urine(
    reading: _Reading,
    record: PatientRecord,
    order: OrderContext,
    policy: Policy,
    upcr_present: bool,
) -> None:
    """Dipstick protein of 1+ or more without a UPCR; hematuria (dipstick blood trace or more,
    or urine red cells above the lab's range) with no explanation in the result's note."""
    window = policy["baseline_lab_window"]
    protein, bad = dated_values(record, DIPSTICK_PROTEIN)
    reading.unreadable.extend(bad)
    latest = _newest(current_values(protein, order.t0, window))
    if latest is not None and not upcr_present:
        m = latest.measurement
        grade = _graded(latest) if m.value is None else None
        facts = _facts(latest, "dipstick protein")
        if m.value is not None:
            _judge(reading, latest, "dipstick protein")
        elif grade is None:
            reading.unreadable.append(_no_grade(latest))
        elif grade >= policy["dipstick_protein_grade"]:
            reading.problem(
                Evidence("dipstick-protein-without-upcr", facts),
                Evidence("short-dipstick-protein", facts),
            )
    blood, bad = dated_values(record, URINE_BLOOD)
    reading.unreadable.extend(bad)
    latest = _newest(current_values(blood, order.t0, window))
    if latest is None:
        return
    m = latest.measurement
    if m.value is not None:
        if m.judgement is Judgement.UNREADABLE:
            reading.unreadable.append(_unit_missing(latest))
            return
        positive = m.judgement in (Judgement.HIGH, Judgement.ABNORMAL)
        if m.judgement is Judgement.UNKNOWN:
            reading.notes.append(Evidence("lab-not-judged", _facts(latest, "urine blood")))
    else:
        grade = _graded(latest)
        if grade is None:
            reading.unreadable.append(_no_grade(latest))
            return
        positive = grade > 0
    if not positive:
        return
    explanation = _note_text(m.element) or _note_text(latest.measurement.resource)
    facts = _facts(latest, "urine blood")
    if explanation:
        reading.notes.append(Evidence("hematuria-explained", {**facts, "note": explanation}))
    else:
        reading.problem(Evidence("hematuria", facts), Evidence("short-hematuria", facts))


def read_values(
    record: PatientRecord, order: OrderContext, policy: Policy, upcr_present: bool
) -> _Reading:
    """Every baseline value in the window read: abnormal results, the cited thresholds, and
    values nothing can judge."""
    window = policy["baseline_lab_window"]
    reading = _Reading()
    for vs_id, name in JUDGED:
        values, bad = dated_values(record, vs_id)
        reading.unreadable.extend(bad)
        current = current_values(values, order.t0, window)
        latest = _newest(current)
        if latest is None:
            continue
        _judge(reading, latest, name)
        if vs_id == CREATININE:
            lookback = current_values(values, order.t0, policy["creatinine_rise_lookback"])
            _creatinine_rise(reading, latest, lookback, policy)
    values, bad = dated_values(record, UPCR)
    reading.unreadable.extend(bad)
    latest = _newest(current_values(values, order.t0, window))
    if latest is not None:
        _upcr(reading, latest, policy)
    values, bad = dated_values(record, TSH)
    latest = _newest(current_values(values, order.t0, window))
    if latest is not None and latest.measurement.judgement is Judgement.UNREADABLE:
        reading.unreadable.append(_unit_missing(latest))
    _urine(reading, record, order, policy, upcr_present)
    return reading


def cbc_from_analytes(
    record: PatientRecord, t0: date, window: int
) -> tuple[Evidence | None, Evidence | None]:
    """A CBC with differential sent as analytes: (evidence of a day in the window with all five,
    or None; evidence of the newest day with only some of them, or None)."""
    by_day: dict[date, dict[str, DatedValue]] = {}
    for vs_id, name in CBC_ANALYTES:
        values, _ = dated_values(record, vs_id)
        for value in current_values(values, t0, window):
            if value.when.exact:
                by_day.setdefault(value.when.earliest, {}).setdefault(name, value)
    complete = [day for day, found in by_day.items() if len(found) == len(CBC_ANALYTES)]
    if complete:
        day = max(complete)
        references = sorted({v.measurement.reference for v in by_day[day].values()})
        return (
            Evidence(
                "cbc-analytes",
                {
                    "name": orderables.name("order-cbc-differential"),
                    "when": day.isoformat(),
                    "analytes": ", ".join(name for _, name in CBC_ANALYTES),
                    "reference": ", ".join(references),
                },
            ),
            None,
        )
    if not by_day:
        return None, None
    day = max(by_day)
    found = by_day[day]
    return None, Evidence(
        "cbc-analytes-incomplete",
        {
            "name": orderables.name("order-cbc-differential"),
            "when": day.isoformat(),
            "analytes": ", ".join(name for _, name in CBC_ANALYTES if name in found),
            "absent": ", ".join(name for _, name in CBC_ANALYTES if name not in found),
        },
    )


def _present(name: str, latest: LabResult, vs_id: str) -> Evidence:
    """The evidence line of a present test, with its value when it has one."""
    values = measurements(latest.resource, value_set(vs_id))
    facts: dict[str, str | int] = {
        "name": name,
        "test": latest.test,
        "when": str(latest.when),
        "reference": latest.reference,
    }
    if values and values[0].value is not None:
        return Evidence("baseline-lab-value", {**facts, "value": values[0].value_text()})
    return Evidence("baseline-lab", facts)


def check_baseline_labs(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """One warning listing every baseline test without a final result in the window (one order
    each) and every result that needs review: abnormal against the lab's flag or range, or past
    a cited threshold (UPCR, dipstick protein, hematuria, creatinine rise)."""
    window = policy["baseline_lab_window"]
    present: list[Evidence] = []
    missing: list[str] = []
    stale: list[Evidence] = []
    suggestions: list[Suggestion] = []
    unreadable: list[Unreadable] = []
    upcr_present = False
    for vs_id, orderable in BASELINE_TESTS:
        name = orderables.name(orderable)
        results = lab_results(record, vs_id, order.t0, window)
        unreadable.extend(results.unreadable)
        latest = max(results.current, key=lambda r: r.when.earliest) if results.current else None
        if latest is not None:
            present.append(_present(name, latest, vs_id))
            upcr_present = upcr_present or vs_id == UPCR
            continue
        if vs_id == "cbc-differential-loinc":
            complete, partial = cbc_from_analytes(record, order.t0, window)
            if complete is not None:
                present.append(complete)
                continue
            if partial is not None:
                stale.append(partial)
        missing.append(name)
        old = results.latest_stale
        if old is not None:
            stale.append(
                Evidence(
                    "baseline-lab-too-old",
                    {
                        "name": name,
                        "test": old.test,
                        "when": str(old.when),
                        "reference": old.reference,
                    },
                )
            )
        suggestions.append(order_test(orderable, "baseline-lab", test=name))
    reading = read_values(record, order, policy, upcr_present)
    unreadable.extend(reading.unreadable)
    evidence = tuple(reading.problems + present + stale + reading.notes)
    review: dict[str, str | int | tuple[Evidence, ...]] = {
        "abnormal": tuple(reading.short),
        "abnormal_count": len(reading.problems),
    }
    if not missing and not reading.problems:
        return Finding(
            BASELINE,
            Status.MET,
            Severity.INFO,
            reason="all-present",
            facts={"total": len(BASELINE_TESTS)},
            evidence=evidence,
            unreadable=_unique(unreadable),
        )
    if not missing:
        return Finding(
            BASELINE,
            Status.NOT_MET,
            Severity.WARNING,
            reason="abnormal",
            facts={**review, "total": len(BASELINE_TESTS)},
            evidence=evidence,
            unreadable=_unique(unreadable),
        )
    facts: dict[str, str | int | tuple[Evidence, ...]] = {
        "listed": ", ".join(missing),
        "missing": len(missing),
        "total": len(BASELINE_TESTS),
    }
    return Finding(
        BASELINE,
        Status.NOT_MET if reading.problems else Status.UNKNOWN,
        Severity.WARNING,
        reason="missing-and-abnormal" if reading.problems else "missing",
        facts={**facts, **review} if reading.problems else facts,
        evidence=evidence,
        unreadable=_unique(unreadable),
        suggestions=tuple(suggestions),
    )


BASELINE_LABS_RULE = Rule(
    topic=BASELINE,
    title="REMS baseline laboratory tests",
    logic="Each of CBC with differential, serum creatinine, urinalysis, urine "
    "protein/creatinine ratio, TSH, ALT, AST and total bilirubin needs a final result within "
    "the window before T0; a CBC with differential is also satisfied by its analytes (white "
    "cells, hemoglobin, platelets, neutrophils and lymphocytes, counts or percents) reported the "
    "same day. Every newest value in the window is read: flagged abnormal by the lab or outside "
    "its reference range -> warning naming test, value, range and date (platelets below range "
    "name the immune thrombocytopenia risk); UPCR above `upcr_threshold` mg/g (mg/mg x 1000, "
    "mg/mmol x 8.84 by creatinine's molar mass 113.12 g/mol); urine dipstick protein "
    "grade `dipstick_protein_grade`+ or more without a UPCR in the window; hematuria "
    "(dipstick blood trace or more, or urine red cells above range) with no explanation in the "
    "result's note; serum creatinine more than `creatinine_rise_percent`% above the lowest "
    "earlier result within "
    "`creatinine_rise_lookback` days. A numeric value without a unit is unreadable, not normal; "
    "a value with neither range nor lab flag (and no cited number) is listed as not judged. "
    "TSH values belong to thyroid-disorder. One warning lists what is missing (one lab order "
    "each) and what needs review.",
    indicator="warning",
    source="rems",
    citation="LEMTRADA REMS (baseline laboratory tests described in the PI before the first "
    "infusion); PI boxed warning and section 5 (CBC, creatinine, urinalysis, UPCR, thyroid "
    "function, transaminases and bilirubin before starting); boxed warning (immune "
    "thrombocytopenia); seed document on Lemtrada monitoring (UPCR, dipstick protein, hematuria "
    "and creatinine thresholds, local policy)",
    check=check_baseline_labs,
    value_sets=(
        "alt-loinc",
        "ast-loinc",
        "bilirubin-total-loinc",
        "cbc-differential-loinc",
        "cbc-hemoglobin-loinc",
        "cbc-leukocytes-loinc",
        "cbc-lymphocytes-loinc",
        "cbc-neutrophils-loinc",
        "cbc-platelets-loinc",
        "result-indeterminate",
        "result-negative",
        "result-positive",
        "serum-creatinine-loinc",
        "tsh-loinc",
        "urinalysis-loinc",
        "urine-blood-loinc",
        "urine-protein-creatinine-ratio-loinc",
        "urine-protein-dipstick-loinc",
    ),
    policy_keys=(
        "baseline_lab_window",
        "upcr_threshold",
        "dipstick_protein_grade",
        "creatinine_rise_percent",
        "creatinine_rise_lookback",
    ),
    override_reasons=("action-completed", "need-more-info"),
)
