"""REMS safety monitoring after the infusion (patient-view): the nine monitoring checks, and what
a later-course order sees of the monitoring since the first course.

Each monitoring check reads the record against a MonitoringContext (domain/monitoring.py: the
Lemtrada courses on file and today) instead of an order. Intervals are calendar months from the
last infusion of the last course; a test is overdue only when more than the grace period (local
policy) past its due date. A test ordered (an active ServiceRequest, intent order or
original-order) after its newest result is awaiting that result for one interval: pending, not
overdue. Values are read with the result grammar and lab_values exactly as the baseline check
reads them (same thresholds: UPCR, dipstick protein, creatinine rise, hematuria). Lymphopenia is
the drug's intended effect: never a finding by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from .. import orderables
from ..fhirdata import Malformed, add_months, codings, first_date, reference_of
from ..findings import Evidence, Finding, Severity, Status, Suggestion
from ..lab_values import Judgement, Measurement, creatinine_mg_per_dl, ratio_mg_per_g
from ..monitoring import MonitoringContext, MonitoringSummary, monitoring_context
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..terminology import value_set
from .base import BOTH_HOOKS, PATIENT_VIEW, Rule
from .baseline import CBC_ANALYTES, _graded, _note_text
from .conditions import ConditionHit, current_conditions, shorten
from .course import prior_courses
from .labs import DatedValue, dated_values, lab_results, order_test
from .order import prophylaxis_suggestion

CBC = "monitoring-cbc"
RENAL = "monitoring-renal"
THYROID = "monitoring-thyroid"
LIVER = "monitoring-liver"
AUTOIMMUNE = "autoimmune-complication"
HERPES_AFTER = "herpes-prophylaxis-after-course"
CONTRACEPTION_AFTER = "contraception-after-course"
SKIN_EXAM = "monitoring-skin-exam"
HPV = "monitoring-hpv"
MONITORING_OVERDUE = "monitoring-overdue"

ORDER_INTENTS = frozenset({"order", "original-order"})
PLATELETS_PER_NL = {
    "10*3/ul": 1.0,
    "10^3/ul": 1.0,
    "x10e3/ul": 1.0,
    "k/ul": 1.0,
    "thou/ul": 1.0,
    "10*9/l": 1.0,
    "10^9/l": 1.0,
    "x10e9/l": 1.0,
    "g/l": 1.0,
    "/ul": 0.001,
    "cells/ul": 0.001,
    "{cells}/ul": 0.001,
}
"""Platelet count units to 10^9/L (= 10^3/uL): the ITP threshold is in 10^9/L."""
CD4_PER_UL = {
    "/ul": 1.0,
    "cells/ul": 1.0,
    "{cells}/ul": 1.0,
    "10*6/l": 1.0,
    "10^6/l": 1.0,
    "/mm3": 1.0,
    "cells/mm3": 1.0,
    "10*9/l": 1000.0,
    "10^9/l": 1000.0,
}
"""CD4+ count units to cells/uL (1 cell/uL = 10^6 cells/L)."""


# -- the monitored tests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Test:
    """A test monitored at an interval: its value sets, the orderable suggested, the policy key
    of its interval."""

    key: str
    value_sets: tuple[str, ...]
    orderable: str
    interval: str
    analytes: tuple[str, ...] = ()
    """Value sets that together (all reported on one day) stand for the test (a CBC's analytes)."""

    @property
    def name(self) -> str:
        return orderables.name(self.orderable)


TESTS = {
    "cbc": Test(
        "cbc",
        ("cbc-differential-loinc",),
        "order-cbc-differential",
        "cbc_interval",
        tuple(vs for vs, _ in CBC_ANALYTES),
    ),
    "creatinine": Test(
        "creatinine", ("serum-creatinine-loinc",), "order-serum-creatinine", "renal_interval"
    ),
    "urinalysis": Test(
        "urinalysis",
        ("urinalysis-loinc", "urine-blood-loinc", "urine-protein-dipstick-loinc"),
        "order-urinalysis",
        "renal_interval",
    ),
    "tsh": Test("tsh", ("tsh-loinc",), "order-tsh", "tsh_interval"),
}


@dataclass(frozen=True)
class Timeliness:
    """Where one monitored test stands today."""

    test: Test
    newest: date | None
    """The newest result on file (any date up to today)."""
    due: date
    overdue: bool
    ordered: tuple[date, str] | None = None
    """(day, reference) of an active order after the newest result, while it still counts."""

    @property
    def pending(self) -> bool:
        return self.overdue and self.ordered is not None

    def evidence(self, context: MonitoringContext) -> Evidence:
        """The line saying when the test was last done and when it is due."""
        facts: dict[str, str | int] = {"name": self.test.name, "due": self.due.isoformat()}
        if self.ordered is not None:
            return Evidence(
                "monitoring-awaiting-result",
                {**facts, "ordered": self.ordered[0].isoformat(), "reference": self.ordered[1]},
            )
        if self.newest is None or self.newest < context.last_infusion:
            return Evidence(
                "monitoring-none-since-infusion",
                {**facts, "last_infusion": context.last_infusion.isoformat()},
            )
        return Evidence(
            "monitoring-overdue" if self.overdue else "monitoring-on-time",
            {**facts, "when": self.newest.isoformat()},
        )


def _result_days(record: PatientRecord, test: Test, today: date) -> list[date]:
    """Days with a final result of the test on or before today (a panel, or every analyte of a
    panel reported the same day)."""
    days: set[date] = set()
    for vs_id in test.value_sets:
        for result in lab_results(record, vs_id, today, None).current:
            if result.when.earliest <= today:
                days.add(result.when.earliest)
    if test.analytes:
        by_day: dict[date, set[str]] = {}
        for vs_id in test.analytes:
            values, _ = dated_values(record, vs_id)
            for value in values:
                if value.when.exact and value.when.earliest <= today:
                    by_day.setdefault(value.when.earliest, set()).add(vs_id)
        days.update(d for d, found in by_day.items() if len(found) == len(test.analytes))
    return sorted(days)


def _orders(record: PatientRecord, test: Test) -> list[tuple[date, str]]:
    """(day, reference) of every active ServiceRequest for the test: coded in one of its value
    sets or with the code the service suggests for it, intent order or original-order."""
    wanted = {orderables.code(test.orderable)}
    sets = [value_set(vs_id) for vs_id in (*test.value_sets, *test.analytes)]
    out: list[tuple[date, str]] = []
    for request in record.by_type.get("ServiceRequest", ()):
        if request.get("status") != "active" or request.get("intent") not in ORDER_INTENTS:
            continue
        try:
            codes = codings(request.get("code"))
        except Malformed:
            continue
        if not (wanted & set(codes) or any(record.first_member(codes, vs) for vs in sets)):
            continue
        day = first_date(request, "authoredOn", "occurrenceDateTime", "occurrencePeriod.start")
        if day is not None:
            out.append((day.earliest, reference_of(request)))
    return sorted(out)


def timeliness(
    record: PatientRecord, context: MonitoringContext, policy: Policy, key: str
) -> Timeliness:
    """The monitored test `key` ("cbc", "creatinine", "urinalysis", "tsh") today: due its
    interval after the newest result (never counted from before the last infusion), overdue past
    the grace period, pending while an active order after the newest result is inside one
    interval (plus grace) of its date."""
    test = TESTS[key]
    months, grace = policy[test.interval], timedelta(days=policy["monitoring_grace"])
    days = _result_days(record, test, context.today)
    newest = days[-1] if days else None
    due = context.due(newest or context.last_infusion, months)
    overdue = context.today > due + grace
    if not overdue:
        return Timeliness(test, newest, due, False)
    after = newest or context.last_infusion
    for day, reference in reversed(_orders(record, test)):
        if after < day <= context.today <= add_months(day, months) + grace:
            return Timeliness(test, newest, due, True, (day, reference))
    return Timeliness(test, newest, due, True)


def next_due(record: PatientRecord, context: MonitoringContext, policy: Policy, key: str) -> date:
    """The day a monitored test ("cbc", "creatinine", "urinalysis", "tsh") is next due."""
    return timeliness(record, context, policy, key).due


def _order(t: Timeliness) -> Suggestion:
    return order_test(t.test.orderable, "monitoring-lab", test=t.test.name)


# -- reading values since the first infusion ---------------------------------------------------


def _newest_since(
    record: PatientRecord, vs_id: str, since: date, today: date
) -> tuple[DatedValue | None, list[Unreadable]]:
    """The newest value of a test from `since` to today; on one day the lowest first (a tie
    never hides a low count)."""
    values, unreadable = dated_values(record, vs_id)
    inside = [v for v in values if since <= v.when.earliest <= today]
    if not inside:
        return None, unreadable
    return max(inside, key=lambda v: (v.when.earliest, -(v.measurement.value or 0))), unreadable


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


def _converted(m: Measurement, table: dict[str, float]) -> float | None:
    unit = (m.unit_code or m.unit).strip().lower().replace(" ", "")
    factor = table.get(unit) or table.get(m.unit.strip().lower().replace(" ", ""))
    return None if m.value is None or factor is None else m.value * factor


@dataclass
class _Problems:
    """Abnormal results found by a check: critical ones, warnings, and unreadable values."""

    critical: list[Evidence]
    warnings: list[Evidence]
    unreadable: list[Unreadable]

    @classmethod
    def empty(cls) -> _Problems:
        return cls([], [], [])


def _unit_missing(value: DatedValue) -> Unreadable:
    m = value.measurement
    return Unreadable(m.reference, f"{value.test}: {Judgement.UNREADABLE.value}")


def _judged(found: _Problems, value: DatedValue | None, name: str) -> None:
    """A value flagged by the lab or outside its range: a warning line."""
    if value is None:
        return
    judgement = value.measurement.judgement
    if judgement is Judgement.UNREADABLE:
        found.unreadable.append(_unit_missing(value))
    elif judgement.abnormal:
        found.warnings.append(Evidence("lab-abnormal", _facts(value, name)))


# -- monitoring-cbc ----------------------------------------------------------------------------


def _platelet_fall(
    record: PatientRecord,
    newest: DatedValue,
    per_nl: float | None,
    context: MonitoringContext,
    policy: Policy,
) -> Evidence | None:
    """A platelet count that fell by more than the policy percentage from the count before it
    (since the first infusion, an earlier day): falling fast."""
    if per_nl is None:
        return None
    values, _ = dated_values(record, "cbc-platelets-loinc")
    earlier = [
        (v, count)
        for v in values
        if context.first_infusion <= v.when.earliest < newest.when.earliest
        and (count := _converted(v.measurement, PLATELETS_PER_NL)) is not None
        and count > 0
    ]
    if not earlier:
        return None
    before, count = max(earlier, key=lambda pair: pair[0].when.earliest)
    if per_nl * 100 >= count * (100 - policy["platelet_fall_percent"]):
        return None
    return Evidence(
        "platelets-falling",
        {
            **_facts(newest, "platelets"),
            "fall": round((1 - per_nl / count) * 100),
            "earlier_value": before.measurement.value_text(),
            "earlier_when": str(before.when),
        },
    )


def _cbc_values(record: PatientRecord, context: MonitoringContext, policy: Policy) -> _Problems:
    """Platelets below the ITP threshold, or below the lab's range after falling by more than
    the policy percentage since the previous count (critical), or below the range (warning);
    neutrophils or hemoglobin flagged low by the lab (warning). Lymphocytes are not read."""
    found = _Problems.empty()
    platelets, bad = _newest_since(
        record, "cbc-platelets-loinc", context.first_infusion, context.today
    )
    found.unreadable.extend(bad)
    if platelets is not None:
        m = platelets.measurement
        per_nl = _converted(m, PLATELETS_PER_NL)
        facts = _facts(platelets, "platelets")
        fall = _platelet_fall(record, platelets, per_nl, context, policy)
        if per_nl is not None and per_nl < policy["itp_platelets"]:
            found.critical.append(Evidence("platelets-itp", facts))
        elif fall is not None and m.judgement is Judgement.LOW:
            found.critical.append(fall)
        elif m.judgement is Judgement.LOW:
            found.warnings.append(Evidence("platelets-low", facts))
        elif m.judgement is Judgement.UNREADABLE:
            found.unreadable.append(_unit_missing(platelets))
    for vs_id, name in (
        ("cbc-neutrophils-loinc", "neutrophils"),
        ("cbc-hemoglobin-loinc", "hemoglobin"),
    ):
        value, bad = _newest_since(record, vs_id, context.first_infusion, context.today)
        found.unreadable.extend(bad)
        if value is not None and value.measurement.judgement is Judgement.LOW:
            found.warnings.append(Evidence("lab-abnormal", _facts(value, name)))
    return found


def _monitored_finding(
    topic: str,
    context: MonitoringContext,
    tests: list[Timeliness],
    found: _Problems,
    extra: tuple[Evidence, ...] = (),
    critical_reason: str = "critical",
) -> Finding:
    """One finding from the timeliness of a check's tests and the problems in its values:
    critical alone; else overdue tests (work-up, one order each, problems listed too); else
    abnormal results (review); else awaiting a result (pending); else on time."""
    overdue = [t for t in tests if t.overdue and not t.pending]
    timing = tuple(t.evidence(context) for t in tests)
    due = min(t.due for t in tests)
    unreadable = tuple(dict.fromkeys(found.unreadable))
    base: dict[str, str | int | tuple[Evidence, ...]] = {"next_due": due.isoformat()}
    names = ", ".join(t.test.name for t in overdue)
    if found.critical:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.CRITICAL,
            reason=critical_reason,
            facts={**base, "values": tuple(found.critical), "overdue": names},
            evidence=(*found.critical, *found.warnings, *extra, *timing),
            unreadable=unreadable,
            suggestions=tuple(_order(t) for t in overdue),
        )
    if overdue:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.WARNING,
            reason="overdue-and-abnormal" if found.warnings else "overdue",
            facts={
                **base,
                "overdue": names,
                "count": len(overdue),
                "values": tuple(found.warnings),
            },
            evidence=(*found.warnings, *extra, *timing),
            unreadable=unreadable,
            suggestions=tuple(_order(t) for t in overdue),
        )
    if found.warnings:
        return Finding(
            topic,
            Status.NOT_MET,
            Severity.WARNING,
            reason="abnormal",
            facts={**base, "values": tuple(found.warnings), "count": len(found.warnings)},
            evidence=(*found.warnings, *extra, *timing),
            unreadable=unreadable,
        )
    pending = [t for t in tests if t.pending]
    if pending:
        return Finding(
            topic,
            Status.MET,
            Severity.INFO,
            reason="awaiting-result",
            facts={**base, "pending": ", ".join(t.test.name for t in pending)},
            evidence=(*extra, *timing),
            unreadable=unreadable,
        )
    return Finding(
        topic,
        Status.MET,
        Severity.INFO,
        reason="on-time",
        facts=base,
        evidence=(*extra, *timing),
        unreadable=unreadable,
    )


def check_cbc(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """CBC with differential monthly since the last infusion; platelets under the ITP threshold
    critical, below the lab's range a warning; neutropenia or anemia flagged low a warning."""
    return _monitored_finding(
        CBC,
        context,
        [timeliness(record, context, policy, "cbc")],
        _cbc_values(record, context, policy),
        critical_reason="possible-itp",
    )


CBC_RULE = Rule(
    topic=CBC,
    title="CBC with differential every month until {monitoring_months} months after the last "
    "infusion",
    logic="A CBC with differential (the panel, or its five analytes reported the same day) is due "
    "`cbc_interval` calendar month(s) after the newest one, counted from no earlier than the last "
    "infusion of the last course; more than `monitoring_grace` days past due -> warning with an "
    "order (work-up), unless an active ServiceRequest (intent order/original-order) dated after "
    "the newest result is within one interval: pending. The newest platelet count since the "
    "first infusion below `itp_platelets` x10^9/L, or below the lab's range and more than "
    "`platelet_fall_percent`% below the count before it (since the first infusion) -> critical "
    "(immune thrombocytopenia); below the lab's range -> warning; newest neutrophils or "
    "hemoglobin flagged low or below range -> warning (review). Lymphocytes are not read: "
    "lymphopenia is the intended effect.",
    indicator="critical",
    source="label",
    citation="PI boxed warning and section 5 (immune thrombocytopenia): complete blood counts "
    "with differential at monthly intervals until 48 months after the last infusion; ITP "
    "threshold from the International Working Group definition (Rodeghiero et al., Blood 2009)",
    check=check_cbc,
    value_sets=(
        "cbc-differential-loinc",
        "cbc-hemoglobin-loinc",
        "cbc-leukocytes-loinc",
        "cbc-lymphocytes-loinc",
        "cbc-neutrophils-loinc",
        "cbc-platelets-loinc",
    ),
    policy_keys=(
        "cbc_interval",
        "monitoring_grace",
        "itp_platelets",
        "platelet_fall_percent",
        "monitoring_months",
    ),
    override_reasons=("action-completed", "need-more-info"),
    hooks=PATIENT_VIEW,
)


# -- monitoring-renal --------------------------------------------------------------------------


def _pre_treatment_creatinine(
    record: PatientRecord, context: MonitoringContext
) -> tuple[DatedValue, float] | None:
    """The last creatinine before the first infusion, in mg/dL (the label's pre-treatment
    value)."""
    values, _ = dated_values(record, "serum-creatinine-loinc")
    before = [
        (v, mg)
        for v in values
        if v.when.latest < context.first_infusion
        and (mg := creatinine_mg_per_dl(v.measurement)) is not None
        and mg > 0
    ]
    return max(before, key=lambda pair: pair[0].when.earliest) if before else None


def _explained_hematuria(record: PatientRecord, value: DatedValue) -> str:
    """What explains blood in the urine: the result's note, or a current urinary infection or
    known stones on the problem list."""
    note = _note_text(value.measurement.element) or _note_text(value.measurement.resource)
    if note:
        return note
    hits, _ = current_conditions(record, [value_set("hematuria-explanation-condition")])
    return hits[0].name if hits else ""


def _renal_values(record: PatientRecord, context: MonitoringContext, policy: Policy) -> _Problems:
    """UPCR, creatinine rise against the pre-treatment value, hematuria without an explanation,
    dipstick protein without a UPCR; a rise with hematuria or UPCR above the threshold is
    critical (possible anti-GBM disease)."""
    found = _Problems.empty()
    since, today = context.first_infusion, context.today
    rise: Evidence | None = None
    creatinine, bad = _newest_since(record, "serum-creatinine-loinc", since, today)
    found.unreadable.extend(bad)
    baseline = _pre_treatment_creatinine(record, context)
    if creatinine is not None:
        now = creatinine_mg_per_dl(creatinine.measurement)
        if now is not None and baseline is not None:
            base, mg = baseline
            percent = (now / mg - 1) * 100
            # Compared as products: 1.30 / 1.00 - 1 is 0.30000000000000004 in floating point.
            if now * 100 > mg * (100 + policy["creatinine_rise_percent"]):
                rise = Evidence(
                    "creatinine-rise",
                    {
                        **_facts(creatinine, "creatinine"),
                        "rise": round(percent),
                        "earlier_value": base.measurement.value_text(),
                        "earlier_when": str(base.when),
                    },
                )
        if rise is None:
            _judged(found, creatinine, "creatinine")
    renal_signs: list[Evidence] = []
    upcr, bad = _newest_since(record, "urine-protein-creatinine-ratio-loinc", since, today)
    found.unreadable.extend(bad)
    if upcr is not None:
        mg_per_g = ratio_mg_per_g(upcr.measurement)
        if mg_per_g is not None and mg_per_g > policy["upcr_threshold"]:
            renal_signs.append(
                Evidence(
                    "upcr-above-threshold",
                    {**_facts(upcr, "UPCR"), "mg_per_g": f"{mg_per_g:.0f}"},
                )
            )
        elif mg_per_g is None:
            _judged(found, upcr, "UPCR")
    blood, bad = _newest_since(record, "urine-blood-loinc", since, today)
    found.unreadable.extend(bad)
    if blood is not None:
        m = blood.measurement
        positive = (
            m.judgement in (Judgement.HIGH, Judgement.ABNORMAL)
            if m.value is not None
            else (_graded(blood) or 0) > 0
        )
        if positive:
            explanation = _explained_hematuria(record, blood)
            if not explanation:
                renal_signs.append(Evidence("hematuria", _facts(blood, "urine blood")))
    protein, bad = _newest_since(record, "urine-protein-dipstick-loinc", since, today)
    found.unreadable.extend(bad)
    if protein is not None and upcr is None and protein.measurement.value is not None:
        _judged(found, protein, "dipstick protein")
    elif protein is not None and upcr is None:
        grade = _graded(protein)
        if grade is not None and grade >= policy["dipstick_protein_grade"]:
            found.warnings.append(
                Evidence("monitoring-dipstick-protein", _facts(protein, "dipstick protein"))
            )
    if rise is not None and renal_signs:
        found.critical.extend((rise, *renal_signs))
    else:
        found.warnings.extend(([rise] if rise else []) + renal_signs)
    return found


def check_renal(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """Serum creatinine and urinalysis with cell counts monthly; UPCR, dipstick protein,
    creatinine rise and unexplained hematuria; a rise with hematuria or UPCR is critical."""
    return _monitored_finding(
        RENAL,
        context,
        [
            timeliness(record, context, policy, "creatinine"),
            timeliness(record, context, policy, "urinalysis"),
        ],
        _renal_values(record, context, policy),
        critical_reason="possible-anti-gbm",
    )


RENAL_RULE = Rule(
    topic=RENAL,
    title="Serum creatinine and urinalysis every month until {monitoring_months} months after "
    "the last infusion",
    logic="Serum creatinine and a urinalysis (panel, urine blood or dipstick protein) are each "
    "due `renal_interval` calendar month(s) after the newest result, counted from no earlier than "
    "the last infusion; more than `monitoring_grace` days past due -> warning with one order per "
    "test, unless ordered after the newest result within one interval (pending). Since the first "
    "infusion: UPCR above `upcr_threshold` mg/g; serum creatinine more than "
    "`creatinine_rise_percent`% above the last result before the first infusion; hematuria "
    "(dipstick blood trace or more, or red cells above range) with no explanation (the result's "
    "note, a current urinary infection or known stones); dipstick protein "
    "`dipstick_protein_grade`+ or more without a UPCR -> warning naming the values. A creatinine "
    "rise together with unexplained hematuria or UPCR above the threshold -> critical (possible "
    "anti-GBM disease).",
    indicator="critical",
    source="label",
    citation="PI boxed warning and section 5 (glomerular nephropathies including anti-GBM "
    "disease): serum creatinine and urinalysis with urine cell counts at monthly intervals until "
    "48 months after the last infusion, prompt evaluation of changes; thresholds from the seed "
    "document on Lemtrada monitoring (local policy)",
    check=check_renal,
    value_sets=(
        "hematuria-explanation-condition",
        "serum-creatinine-loinc",
        "urinalysis-loinc",
        "urine-blood-loinc",
        "urine-protein-creatinine-ratio-loinc",
        "urine-protein-dipstick-loinc",
    ),
    policy_keys=(
        "renal_interval",
        "monitoring_grace",
        "upcr_threshold",
        "dipstick_protein_grade",
        "creatinine_rise_percent",
    ),
    override_reasons=("action-completed", "need-more-info"),
    hooks=PATIENT_VIEW,
)


# -- monitoring-thyroid, monitoring-liver, autoimmune-complication -------------------------------


def _onset(hit: ConditionHit) -> date | None:
    when = first_date(hit.resource, "onsetDateTime", "onsetPeriod.start", "recordedDate")
    return None if when is None else when.latest


def conditions_since(
    record: PatientRecord, vs_id: str, first_infusion: date
) -> tuple[list[ConditionHit], list[Unreadable]]:
    """Current Conditions of a value set with onset (else recorded date) on or after the first
    infusion; undated ones are not taken as new."""
    hits, unreadable = current_conditions(record, [value_set(vs_id)])
    return [h for h in hits if (day := _onset(h)) is not None and day >= first_infusion], unreadable


def check_thyroid(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """TSH every three months; TSH outside the lab's range; a thyroid disorder with onset after
    the first infusion."""
    found = _Problems.empty()
    tsh, bad = _newest_since(record, "tsh-loinc", context.first_infusion, context.today)
    found.unreadable.extend(bad)
    if tsh is not None:
        m = tsh.measurement
        if m.judgement is Judgement.UNREADABLE:
            found.unreadable.append(_unit_missing(tsh))
        elif m.judgement.abnormal:
            found.warnings.append(Evidence("tsh-out-of-range", _facts(tsh, "TSH")))
    hits, bad = conditions_since(record, "thyroid-disorder-condition", context.first_infusion)
    found.unreadable.extend(bad)
    found.warnings.extend(h.evidence() for h in hits)
    return _monitored_finding(THYROID, context, [timeliness(record, context, policy, "tsh")], found)


THYROID_RULE = Rule(
    topic=THYROID,
    title="TSH every {tsh_interval} months until {monitoring_months} months after the last "
    "infusion",
    logic="TSH is due `tsh_interval` calendar months after the newest one, counted from no "
    "earlier than the last infusion; more than `monitoring_grace` days past due -> warning with "
    "an order, unless ordered after the newest result within one interval (pending). The newest "
    "TSH since the first infusion flagged or outside the lab's range, or a current thyroid "
    "disorder (thyroid-disorder value set) with onset after the first infusion -> warning "
    "naming it (review).",
    indicator="warning",
    source="label",
    citation="PI section 5 (thyroid disorders): thyroid function tests such as TSH every 3 "
    "months until 48 months after the last infusion",
    check=check_thyroid,
    value_sets=("thyroid-disorder-condition", "tsh-loinc"),
    policy_keys=("tsh_interval", "monitoring_grace"),
    override_reasons=("action-completed", "need-more-info"),
    hooks=PATIENT_VIEW,
)

LIVER_TESTS = (
    ("alt-loinc", "ALT"),
    ("ast-loinc", "AST"),
    ("bilirubin-total-loinc", "total bilirubin"),
)


def check_liver(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """ALT, AST or total bilirubin above the lab's range since the first infusion."""
    found = _Problems.empty()
    for vs_id, name in LIVER_TESTS:
        value, bad = _newest_since(record, vs_id, context.first_infusion, context.today)
        found.unreadable.extend(bad)
        if value is not None and value.measurement.judgement is Judgement.UNREADABLE:
            found.unreadable.append(_unit_missing(value))
        elif value is not None and value.measurement.judgement in (
            Judgement.HIGH,
            Judgement.ABNORMAL,
        ):
            found.warnings.append(Evidence("lab-abnormal", _facts(value, name)))
    unreadable = tuple(dict.fromkeys(found.unreadable))
    if found.warnings:
        return Finding(
            LIVER,
            Status.NOT_MET,
            Severity.WARNING,
            reason="abnormal",
            facts={"values": tuple(found.warnings), "count": len(found.warnings)},
            evidence=tuple(found.warnings),
            unreadable=unreadable,
        )
    return Finding(LIVER, Status.MET, Severity.INFO, reason="within-range", unreadable=unreadable)


LIVER_RULE = Rule(
    topic=LIVER,
    title="Transaminases and bilirubin within range",
    logic="The newest ALT, AST and total bilirubin since the first infusion: flagged high or "
    "above the lab's range -> warning naming value, range and date (possible autoimmune "
    "hepatitis). No interval: the label asks for them periodically.",
    indicator="warning",
    source="label",
    citation="PI section 5 (autoimmune hepatitis): serum transaminases and total bilirubin "
    "periodically until 48 months after the last infusion; prompt evaluation when elevated",
    check=check_liver,
    value_sets=("alt-loinc", "ast-loinc", "bilirubin-total-loinc"),
    override_reasons=("action-completed", "need-more-info"),
    hooks=PATIENT_VIEW,
)

AUTOIMMUNE_SET = "autoimmune-complication-condition"


def _complications(
    record: PatientRecord, first_infusion: date, severity: Severity, reason: str
) -> Finding:
    hits, unreadable = conditions_since(record, AUTOIMMUNE_SET, first_infusion)
    if hits:
        return Finding(
            AUTOIMMUNE,
            Status.NOT_MET,
            severity,
            reason=reason,
            facts={
                "condition": shorten(hits[0].name),
                "first_infusion": first_infusion.isoformat(),
            },
            evidence=tuple(h.evidence() for h in hits),
            unreadable=tuple(unreadable),
        )
    return Finding(
        AUTOIMMUNE,
        Status.MET,
        Severity.INFO,
        reason="none-since-first-infusion",
        facts={"first_infusion": first_infusion.isoformat()},
        unreadable=tuple(unreadable),
    )


def check_autoimmune(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """A Condition of the autoimmune-complication set with onset after the first infusion."""
    return _complications(record, context.first_infusion, Severity.WARNING, "complication")


AUTOIMMUNE_RULE = Rule(
    topic=AUTOIMMUNE,
    title="No autoimmune complication since the first infusion",
    logic="A current Condition in the autoimmune-complication value set (immune "
    "thrombocytopenia, anti-GBM disease and glomerulonephritis, autoimmune hepatitis, "
    "autoimmune hemolytic anemia, pure red cell aplasia) with onset (else recorded date) on or "
    "after the first infusion -> warning naming it (critical on a later-course order). Thyroid "
    "disorders belong to monitoring-thyroid.",
    indicator="warning",
    source="label",
    citation="PI boxed warning and section 5 (immune thrombocytopenia, glomerular nephropathies "
    "including anti-GBM disease, other autoimmune cytopenias, autoimmune hepatitis)",
    check=check_autoimmune,
    value_sets=(AUTOIMMUNE_SET,),
    override_reasons=("action-completed", "recipient-disagrees-evidence"),
    hooks=PATIENT_VIEW,
)


# -- herpes prophylaxis and contraception after the course ---------------------------------------


def _antiviral_in_use(record: PatientRecord, today: date) -> Evidence | None:
    """An active antiviral (herpes-antiviral set, by code or name) not ended before today."""
    vs = value_set("herpes-antiviral-rxnorm")
    uses, _ = record.medication_uses()
    for use in uses:
        if use.status != "active" or (use.end is not None and use.end.latest < today):
            continue
        code = vs.matches_any(list(use.codes))
        named = None if code else vs.name_in(use.words)
        if code is None and named is None:
            continue
        return Evidence(
            "antiviral-in-use",
            {
                "medication": vs.display(code) if code else named[0] if named else "",
                "start": str(use.start),
                "reference": reference_of(use.resource),
            },
        )
    return None


def _newest_cd4(
    record: PatientRecord, context: MonitoringContext
) -> tuple[DatedValue, float | None] | None:
    value, _ = _newest_since(record, "cd4-loinc", context.last_infusion, context.today)
    if value is None:
        return None
    return value, _converted(value.measurement, CD4_PER_UL)


def check_herpes_after(
    record: PatientRecord, context: MonitoringContext, policy: Policy
) -> Finding:
    """Antiviral herpes prophylaxis for at least two months after the last infusion, or until
    CD4+ is at least 200 cells/uL, whichever is later."""
    until = add_months(context.last_infusion, policy["herpes_prophylaxis_months"])
    facts: dict[str, str | int | tuple[Evidence, ...]] = {"until": until.isoformat()}
    in_use = _antiviral_in_use(record, context.today)
    if in_use is not None:
        return Finding(
            HERPES_AFTER,
            Status.MET,
            Severity.INFO,
            reason="in-use",
            facts=facts,
            evidence=(in_use,),
        )
    suggestion = prophylaxis_suggestion(context.today, max(until, context.today))
    if context.today <= until:
        return Finding(
            HERPES_AFTER,
            Status.NOT_MET,
            Severity.WARNING,
            reason="none-within-months",
            facts=facts,
            suggestions=(suggestion,),
        )
    cd4 = _newest_cd4(record, context)
    if cd4 is None:
        return Finding(HERPES_AFTER, Status.NOT_MET, Severity.INFO, reason="no-cd4", facts=facts)
    value, per_ul = cd4
    line = Evidence("cd4-count", _facts(value, "CD4+"))
    if per_ul is None:
        return Finding(
            HERPES_AFTER,
            Status.NOT_MET,
            Severity.INFO,
            reason="no-cd4",
            facts=facts,
            evidence=(line,),
            unreadable=(_unit_missing(value),),
        )
    if per_ul < policy["cd4_prophylaxis_threshold"]:
        return Finding(
            HERPES_AFTER,
            Status.NOT_MET,
            Severity.WARNING,
            reason="cd4-low",
            facts={**facts, "cd4": value.measurement.value_text()},
            evidence=(line,),
            suggestions=(suggestion,),
        )
    return Finding(
        HERPES_AFTER,
        Status.MET,
        Severity.INFO,
        reason="cd4-recovered",
        facts=facts,
        evidence=(line,),
    )


HERPES_AFTER_RULE = Rule(
    topic=HERPES_AFTER,
    title="Antiviral herpes prophylaxis after the course",
    logic="An active antiviral of the herpes-antiviral set (MedicationRequest or "
    "MedicationStatement, not ended) -> met. Else within `herpes_prophylaxis_months` calendar "
    "months after the last infusion -> warning with an acyclovir order (review); later, the "
    "newest CD4+ count since the last infusion below `cd4_prophylaxis_threshold` cells/uL -> "
    "the same warning; no CD4+ count on file -> an item to confirm (checklist, info); CD4+ at or "
    "above the threshold -> met.",
    indicator="warning",
    source="label",
    citation="PI section 2 (Herpes Prophylaxis): antiviral prophylaxis for a minimum of 2 months "
    "after treatment or until the CD4+ count is at least 200 cells/uL, whichever is later",
    check=check_herpes_after,
    value_sets=("cd4-loinc", "herpes-antiviral-rxnorm"),
    policy_keys=("herpes_prophylaxis_months", "cd4_prophylaxis_threshold"),
    override_reasons=("indication-order-exists", "patient-contraindication"),
    hooks=PATIENT_VIEW,
)


def check_contraception_after(
    record: PatientRecord, context: MonitoringContext, policy: Policy
) -> Finding:
    """A patient who may be pregnant, within four months after a course: confirm
    contraception (checklist only)."""
    from .indication import age_at  # the indication module reads the same Patient

    until = add_months(context.last_infusion, policy["contraception_after_course"])
    facts: dict[str, str | int | tuple[Evidence, ...]] = {"until": until.isoformat()}
    gender = record.patient.get("gender") if record.patient else None
    age, _ = age_at(record, context.today)
    outside = age is not None and (
        age.youngest > policy["reproductive_age_max"] or age.oldest < policy["reproductive_age_min"]
    )
    if gender == "male" or outside or context.today > until:
        return Finding(
            CONTRACEPTION_AFTER, Status.MET, Severity.INFO, reason="not-applicable", facts=facts
        )
    return Finding(
        CONTRACEPTION_AFTER, Status.NOT_MET, Severity.INFO, reason="confirm", facts=facts
    )


CONTRACEPTION_AFTER_RULE = Rule(
    topic=CONTRACEPTION_AFTER,
    title="Contraception for {contraception_after_course} months after each course",
    logic="A patient not recorded as male, aged `reproductive_age_min` to "
    "`reproductive_age_max` (or of unknown age), within `contraception_after_course` calendar "
    "months after the last infusion -> an item to confirm in the checklist (not-met, info), "
    "never a card; otherwise not applicable.",
    indicator="info",
    source="label",
    citation="PI section 8.3: effective contraception during and for 4 months after each "
    "treatment course",
    check=check_contraception_after,
    policy_keys=("contraception_after_course", "reproductive_age_min", "reproductive_age_max"),
    hooks=PATIENT_VIEW,
)


# -- yearly skin exam and HPV screening ----------------------------------------------------------


def _newest_on_file(
    record: PatientRecord, vs_id: str, types: Iterable[str], today: date
) -> tuple[date, str] | None:
    """(day, reference) of the newest Procedure/Observation coded in the set, not in the
    future, done (completed/final status)."""
    vs = value_set(vs_id)
    found: list[tuple[date, str]] = []
    for rtype in types:
        for resource in record.coded(rtype, vs):
            if resource.get("status") not in ("completed", "final", "amended", "corrected"):
                continue
            when = first_date(
                resource,
                "performedDateTime",
                "performedPeriod.start",
                "effectiveDateTime",
                "effectivePeriod.start",
                "issued",
            )
            if when is not None and when.earliest <= today:
                found.append((when.earliest, reference_of(resource)))
    return max(found) if found else None


def _yearly(
    topic: str,
    record: PatientRecord,
    context: MonitoringContext,
    vs_id: str,
    months: int,
    types: tuple[str, ...],
) -> Finding:
    newest = _newest_on_file(record, vs_id, types, context.today)
    if newest is not None and add_months(newest[0], months) >= context.today:
        return Finding(
            topic,
            Status.MET,
            Severity.INFO,
            reason="done",
            evidence=(
                Evidence("screening-done", {"when": newest[0].isoformat(), "reference": newest[1]}),
            ),
        )
    evidence = (
        (Evidence("screening-too-old", {"when": newest[0].isoformat(), "reference": newest[1]}),)
        if newest
        else ()
    )
    return Finding(topic, Status.NOT_MET, Severity.INFO, reason="none-this-year", evidence=evidence)


def check_skin_exam(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """A skin examination within the last year (checklist only)."""
    return _yearly(
        SKIN_EXAM,
        record,
        context,
        "skin-exam-snomed",
        policy["skin_exam_interval"],
        ("Procedure", "Observation"),
    )


SKIN_EXAM_RULE = Rule(
    topic=SKIN_EXAM,
    title="Yearly skin examination",
    logic="A completed Procedure or final Observation coded as a skin examination within "
    "`skin_exam_interval` calendar months -> met; none -> an item to confirm in the checklist "
    "(not-met, info), never a card.",
    indicator="info",
    source="label",
    citation="PI section 5 (malignancies: melanoma): baseline and yearly skin exams",
    check=check_skin_exam,
    value_sets=("skin-exam-snomed",),
    policy_keys=("skin_exam_interval",),
    hooks=PATIENT_VIEW,
)


def check_hpv(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """Yearly HPV screening for women (checklist only); not applicable to men."""
    if record.patient is not None and record.patient.get("gender") == "male":
        return Finding(HPV, Status.MET, Severity.INFO, reason="not-applicable")
    return _yearly(
        HPV,
        record,
        context,
        "hpv-screening-loinc",
        policy["hpv_screening_interval"],
        ("Observation", "Procedure"),
    )


HPV_RULE = Rule(
    topic=HPV,
    title="Yearly HPV screening",
    logic="A patient not recorded as male: a final cervical HPV test (Observation) within "
    "`hpv_screening_interval` calendar months -> met; none -> an item to confirm in the "
    "checklist (not-met, info), never a card. Male -> not applicable.",
    indicator="info",
    source="label",
    citation="PI section 5 (infections: human papillomavirus): annual HPV screening for female "
    "patients",
    check=check_hpv,
    value_sets=("hpv-screening-loinc",),
    policy_keys=("hpv_screening_interval",),
    hooks=PATIENT_VIEW,
)


MONITORING_RULES: tuple[Rule, ...] = (
    CBC_RULE,
    RENAL_RULE,
    AUTOIMMUNE_RULE,
    THYROID_RULE,
    LIVER_RULE,
    HERPES_AFTER_RULE,
    CONTRACEPTION_AFTER_RULE,
    SKIN_EXAM_RULE,
    HPV_RULE,
)
"""The monitoring checks, in the order their cards appear (within one indicator)."""


def evaluate_monitoring(
    record: PatientRecord, context: MonitoringContext, policy: Policy
) -> list[tuple[Rule, Finding]]:
    """Every monitoring rule with its finding, in table order: the same (rule, finding) pairs
    as domain/evaluate.py's evaluate() returns for the order services (a rule that cannot read
    the data answers unknown, never an all-clear)."""
    from ..evaluate import guarded  # evaluate imports the rule package, which imports this

    return [(rule, guarded(rule, record, context, policy)) for rule in MONITORING_RULES]


# -- a later course sees the monitoring since the first one (order-select / order-sign) ---------


def _order_context(record: PatientRecord, order: OrderContext, policy: Policy) -> date | None:
    """The first infusion of the prior Lemtrada courses before T0, or None for a first course."""
    history = prior_courses(record, order, policy["course_grouping_gap"])
    return history.courses[0].first if history.courses else None


def check_autoimmune_at_order(
    record: PatientRecord, order: OrderContext, policy: Policy
) -> Finding:
    """On a later course: an autoimmune complication with onset after the first infusion is a
    hard stop to review (critical); on a first course the check does not apply."""
    first = _order_context(record, order, policy)
    if first is None:
        return Finding(AUTOIMMUNE, Status.MET, Severity.INFO, reason="not-applicable")
    return _complications(record, first, Severity.CRITICAL, "complication-before-later-course")


LATER_COURSE_AUTOIMMUNE_RULE = Rule(
    topic=AUTOIMMUNE,
    title="No autoimmune complication since the first course",
    logic="Only for a later course (a completed Lemtrada course before T0, read as the "
    "course-interval check reads it): a current Condition in the autoimmune-complication value "
    "set with onset (else recorded date) on or after the first infusion -> critical naming it. "
    "First course -> not applicable.",
    indicator="critical",
    source="label",
    citation="PI boxed warning and section 5 (immune thrombocytopenia, glomerular nephropathies "
    "including anti-GBM disease, other autoimmune cytopenias, autoimmune hepatitis after "
    "alemtuzumab)",
    check=check_autoimmune_at_order,
    value_sets=(AUTOIMMUNE_SET,),
    policy_keys=("course_grouping_gap",),
    override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
    hooks=BOTH_HOOKS,
)


def check_monitoring_at_order(
    record: PatientRecord, order: OrderContext, policy: Policy
) -> Finding:
    """On a later course: the monitoring tests overdue on the planned start (CBC, creatinine,
    urinalysis, TSH), a warning for the work-up card. The orders themselves are suggested by
    baseline-labs (the same tests within its window), so none is suggested twice."""
    if _order_context(record, order, policy) is None:
        return Finding(MONITORING_OVERDUE, Status.MET, Severity.INFO, reason="not-applicable")
    context = monitoring_context(record, order.t0, policy)
    if context is None:
        return Finding(MONITORING_OVERDUE, Status.MET, Severity.INFO, reason="not-applicable")
    tests = [timeliness(record, context, policy, key) for key in TESTS]
    overdue = [t for t in tests if t.overdue and not t.pending]
    if not overdue:
        return Finding(MONITORING_OVERDUE, Status.MET, Severity.INFO, reason="on-time")
    return Finding(
        MONITORING_OVERDUE,
        Status.NOT_MET,
        Severity.WARNING,
        reason="overdue",
        facts={"overdue": ", ".join(t.test.name for t in overdue), "count": len(overdue)},
        evidence=tuple(t.evidence(context) for t in overdue),
    )


MONITORING_OVERDUE_RULE = Rule(
    topic=MONITORING_OVERDUE,
    title="Monitoring up to date since the last course",
    logic="Only for a later course: on T0, each of CBC with differential, serum creatinine, "
    "urinalysis (monthly) and TSH (every 3 months) read as the monitoring checks read them "
    "(due after the newest result, never before the last infusion; `monitoring_grace` days; an "
    "active order after the newest result is pending) -> overdue ones listed in one warning "
    "(work-up card). No order is suggested here: baseline-labs suggests the same tests.",
    indicator="warning",
    source="label",
    citation="PI boxed warning and section 5: CBC, serum creatinine and urinalysis monthly and "
    "TSH every 3 months until 48 months after the last infusion",
    check=check_monitoring_at_order,
    value_sets=(
        "cbc-differential-loinc",
        "serum-creatinine-loinc",
        "tsh-loinc",
        "urinalysis-loinc",
    ),
    policy_keys=("cbc_interval", "renal_interval", "tsh_interval", "monitoring_grace"),
    override_reasons=("action-completed", "need-more-info"),
    hooks=BOTH_HOOKS,
)


# -- the worklist row ----------------------------------------------------------------------------


def _abnormal_entries(finding: Finding) -> list[str]:
    """'platelets 95 x10^9/L on 2026-01-05' for each value or condition a finding names."""
    out: list[str] = []
    for line in finding.evidence:
        facts = line.facts
        if "value" in facts and "when" in facts and line.kind not in ("cd4-count",):
            if line.kind.startswith("monitoring-"):
                continue
            out.append(
                f"{facts.get('name', facts.get('test'))} {facts['value']} on {facts['when']}"
            )
        elif "condition" in facts:
            out.append(f"{facts['condition']} since {facts.get('when')}")
    return out


def summary_parts(
    checked: list[tuple[Rule, Finding]], context: MonitoringContext, policy: Policy
) -> MonitoringSummary:
    """domain/monitoring.py summarise(), over the findings of this module."""
    from ..checklist import card_group

    urgency = Severity.INFO
    overdue: list[str] = []
    abnormal: list[str] = []
    next_due: date | None = None
    for _, finding in checked:
        if card_group(finding) is not None:
            urgency = max(urgency, finding.severity)
        named = finding.facts.get("overdue")
        if isinstance(named, str) and named and finding.reason != "awaiting-result":
            overdue.extend(named.split(", "))
        if finding.reason not in ("overdue", "awaiting-result", "on-time") and finding.shown:
            abnormal.extend(_abnormal_entries(finding))
        due = finding.facts.get("next_due")
        if isinstance(due, str):
            day = date.fromisoformat(due)
            next_due = day if next_due is None else min(next_due, day)
    return MonitoringSummary(urgency, tuple(overdue), tuple(dict.fromkeys(abnormal)), next_due)
