"""Safety monitoring after the infusion, as clinical sentences: who is in monitoring, each test on
time and overdue, each threshold just above and just below, pending orders, two courses, and
where each finding goes (work-up, review, its own card, checklist only).

Records are shaped like the ones EHRs send: Synthea-like US Core laboratory Observations with
UCUM quantities and referenceRange, MedicationAdministrations of Lemtrada (RxNorm), Conditions
in ICD-10-CM, ServiceRequests for pending orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest

from cds_service.cards import worded
from cds_service.domain.checklist import CardGroup, ChecklistStatus, card_group, checklist_status
from cds_service.domain.findings import Finding, Severity
from cds_service.domain.monitoring import monitoring_context, monitoring_dates, summarise
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules.monitoring import MONITORING_RULES, evaluate_monitoring

POLICY = load_policy()
PATIENT = "monitored-patient"
TODAY = date(2026, 6, 15)
COURSE_START = date(2026, 1, 5)
"""A five-day first course, 5 to 9 January 2026: the last infusion 157 days before TODAY."""
LAST_INFUSION = COURSE_START + timedelta(days=4)
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LEMTRADA = ("1594663", "1.2 ML alemtuzumab 10 MG/ML Injection [Lemtrada]")
CAMPATH = ("1594654", "alemtuzumab 30 MG/ML Injectable Solution [Campath]")


def ago(days: int) -> date:
    return TODAY - timedelta(days=days)


# -- resources as EHRs send them ----------------------------------------------------------------


def patient(gender: str = "female", born: str = "1990-04-02", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": PATIENT, "gender": gender, "birthDate": born, **extra}


def infusion(day: date, code: tuple[str, str] = LEMTRADA, n: int = 0) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": f"alemtuzumab-{day.isoformat()}-{n}",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": code[0], "display": code[1]}],
            "text": code[1],
        },
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": f"{day.isoformat()}T09:00:00-05:00",
    }


def course(start: date, days: int = 5, code: tuple[str, str] = LEMTRADA) -> list[dict[str, Any]]:
    return [infusion(start + timedelta(days=i), code, i) for i in range(days)]


_ids = iter(range(1, 1_000_000))


def lab(
    code: str,
    display: str,
    day: date,
    value: float | None = None,
    unit: str = "",
    low: float | None = None,
    high: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A final laboratory Observation (US Core / Synthea): valueQuantity in UCUM with the lab's
    reference range."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"lab-{next(_ids)}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": f"{day.isoformat()}T08:30:00-05:00",
        "issued": f"{day.isoformat()}T14:00:00-05:00",
        **extra,
    }
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if low is not None or high is not None:
        band: dict[str, Any] = {}
        if low is not None:
            band["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
        if high is not None:
            band["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
        resource["referenceRange"] = [band]
    return resource


def cbc(
    day: date,
    platelets: float = 250,
    neutrophils: float = 4.1,
    hemoglobin: float = 13.6,
    lymphocytes: float = 1.6,
) -> list[dict[str, Any]]:
    """A CBC with differential sent as its analytes (Synthea), each with its range."""
    per_ul = "10*3/uL"
    return [
        lab(
            "6690-2", "Leukocytes [#/volume] in Blood by Automated count", day, 6.2, per_ul, 4.5, 11
        ),
        lab("718-7", "Hemoglobin [Mass/volume] in Blood", day, hemoglobin, "g/dL", 12, 15.5),
        lab(
            "777-3",
            "Platelets [#/volume] in Blood by Automated count",
            day,
            platelets,
            per_ul,
            150,
            400,
        ),
        lab(
            "751-8",
            "Neutrophils [#/volume] in Blood by Automated count",
            day,
            neutrophils,
            per_ul,
            1.8,
            7.7,
        ),
        lab(
            "731-0",
            "Lymphocytes [#/volume] in Blood by Automated count",
            day,
            lymphocytes,
            per_ul,
            1.0,
            4.8,
        ),
    ]


def creatinine(day: date, mg_dl: float = 0.9) -> dict[str, Any]:
    return lab(
        "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", day, mg_dl, "mg/dL", 0.6, 1.4
    )


def urinalysis(day: date, blood: str = "Negative", note: str = "") -> dict[str, Any]:
    """Urine blood by test strip, as a graded answer (the urinalysis of a Synthea record)."""
    extra: dict[str, Any] = {"valueCodeableConcept": {"text": blood}}
    if note:
        extra["note"] = [{"text": note}]
    return lab("5794-3", "Hemoglobin [Presence] in Urine by Test strip", day, **extra)


def dipstick_protein(day: date, grade: str) -> dict[str, Any]:
    return lab(
        "20454-5",
        "Protein [Presence] in Urine by Test strip",
        day,
        valueCodeableConcept={"text": grade},
    )


def upcr(day: date, mg_g: float) -> dict[str, Any]:
    return lab("2890-2", "Protein/Creatinine [Mass Ratio] in Urine", day, mg_g, "mg/g", None, 150)


def tsh(day: date, value: float = 1.8) -> dict[str, Any]:
    return lab(
        "3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", day, value, "m[IU]/L", 0.4, 4.5
    )


def alt(day: date, value: float) -> dict[str, Any]:
    return lab(
        "1742-6",
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        day,
        value,
        "U/L",
        7,
        40,
    )


def cd4(day: date, per_ul: float) -> dict[str, Any]:
    return lab(
        "24467-3", "CD3+CD4+ (T4 helper) cells [#/volume] in Blood", day, per_ul, "/uL", 500, 1500
    )


def order(code: str, display: str, day: date, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": f"order-{next(_ids)}",
        "status": status,
        "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "authoredOn": f"{day.isoformat()}T10:00:00-05:00",
    }


def condition(code: str, display: str, onset: date, note: str = "") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"condition-{next(_ids)}",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {
            "coding": [
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code, "display": display}
            ],
            "text": display,
        },
        "subject": {"reference": f"Patient/{PATIENT}"},
        "onsetDateTime": onset.isoformat(),
    }


def acyclovir(start: date) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"acyclovir-{next(_ids)}",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {"system": RXNORM, "code": "197311", "display": "acyclovir 400 MG Oral Tablet"}
            ]
        },
        "subject": {"reference": f"Patient/{PATIENT}"},
        "authoredOn": start.isoformat(),
    }


def skin_exam(day: date) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": f"skin-exam-{next(_ids)}",
        "status": "completed",
        "code": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "271303006",
                    "display": "Examination of skin",
                }
            ]
        },
        "subject": {"reference": f"Patient/{PATIENT}"},
        "performedDateTime": day.isoformat(),
    }


def hpv_test(day: date) -> dict[str, Any]:
    return lab(
        "30167-1",
        "Human papilloma virus 16+18+31+33+35+39+45+51+52+56+58+59+68 DNA [Presence] in Cervix by "
        "Probe with signal amplification",
        day,
        valueCodeableConcept={"text": "Not detected"},
    )


# -- a record, the checks, and what a clinician sees -----------------------------------------------


def up_to_date() -> list[dict[str, Any]]:
    """Everything on time: a treated woman with this month's labs, TSH last month, prophylaxis,
    CD4 recovered, skin exam and HPV screening this year."""
    return [
        *cbc(ago(10)),
        creatinine(ago(10)),
        urinalysis(ago(10)),
        tsh(ago(40)),
        skin_exam(ago(100)),
        hpv_test(ago(100)),
        cd4(ago(10), 320),
    ]


@dataclass
class Chart:
    """A patient's chart: the patient, the Lemtrada courses and everything else on file."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    who: dict[str, Any] = field(default_factory=patient)
    courses: list[list[dict[str, Any]]] = field(default_factory=lambda: [course(COURSE_START)])
    baseline: list[dict[str, Any]] = field(
        default_factory=lambda: [creatinine(COURSE_START - timedelta(days=20), 1.0)]
    )
    """Pre-treatment results (before the first infusion)."""

    def record(self) -> PatientRecord:
        resources = [
            self.who,
            *self.baseline,
            *(r for c in self.courses for r in c),
            *self.resources,
        ]
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in resources],
        }
        return PatientRecord.build(PATIENT, [bundle])


def findings(chart: Chart, today: date = TODAY) -> dict[str, Finding]:
    record = chart.record()
    context = monitoring_context(record, today, POLICY)
    assert context is not None, "the patient should be in monitoring"
    return {rule.topic: finding for rule, finding in evaluate_monitoring(record, context, POLICY)}


def seen(finding: Finding) -> str:
    """Where a clinician sees a finding: its own card, the work-up or review card, pending in the
    checklist, an item to confirm in the checklist, or met."""
    group = card_group(finding)
    status = checklist_status(finding)
    if group is CardGroup.OWN:
        return "critical card"
    if group is CardGroup.WORKUP:
        return "work-up"
    if group is not None:
        return "review"
    if status is ChecklistStatus.PENDING:
        return "pending"
    if status is ChecklistStatus.NOT_MET:
        return "to confirm"
    if status is ChecklistStatus.NOT_APPLICABLE:
        return "not applicable"
    return status.value


# -- who is in monitoring --------------------------------------------------------------------------


def _ended(days_after_end: int) -> Chart:
    """A single course whose 48 months ended `days_after_end` days before TODAY (negative: still
    inside)."""
    ends = TODAY - timedelta(days=days_after_end)
    last = date(ends.year - 4, ends.month, ends.day)
    return Chart(courses=[course(last - timedelta(days=4))])


IN_MONITORING = [
    pytest.param(Chart(), True, id="a patient treated five months ago is in monitoring"),
    pytest.param(Chart(courses=[]), False, id="a patient never treated is not"),
    pytest.param(
        Chart(courses=[course(COURSE_START, code=CAMPATH)]),
        False,
        id="Campath (the leukaemia product) only is not Lemtrada monitoring",
    ),
    pytest.param(
        _ended(-1), True, id="one day before the 48 months end the patient is still monitored"
    ),
    pytest.param(_ended(0), True, id="on the day 48 months end the patient is still monitored"),
    pytest.param(_ended(1), False, id="one day after the 48 months end monitoring is over"),
    pytest.param(
        Chart(who=patient(deceasedDateTime="2026-05-01")),
        False,
        id="a patient recorded as deceased is not monitored",
    ),
    pytest.param(
        Chart(who=patient(deceasedBoolean=True)),
        False,
        id="deceasedBoolean true is not monitored either",
    ),
]


@pytest.mark.parametrize(("chart", "monitored"), IN_MONITORING)
def test_who_is_in_monitoring(chart: Chart, monitored: bool) -> None:
    assert (monitoring_context(chart.record(), TODAY, POLICY) is not None) is monitored


def test_two_courses_count_from_the_last_infusion_of_the_last_course() -> None:
    """A second course a year after the first: monitoring and its 48 months restart from it."""
    second = date(2027, 1, 11)
    chart = Chart(courses=[course(COURSE_START), course(second, days=3)])
    context = monitoring_context(chart.record(), date(2027, 2, 1), POLICY)
    assert context is not None
    assert len(context.courses) == 2
    assert context.first_infusion == COURSE_START
    assert context.last_infusion == date(2027, 1, 13)
    assert context.ends_on == date(2031, 1, 13)


TWO_COURSES = [
    pytest.param(
        [*cbc(date(2027, 1, 2))],
        date(2027, 2, 10),
        "on-time",
        id="a CBC just before a second course: due a month after the second course, on time",
    ),
    pytest.param(
        [*cbc(date(2027, 1, 2))],
        date(2027, 2, 22),
        "overdue",
        id="the same CBC more than a month and a week after the second course: overdue",
    ),
]


@pytest.mark.parametrize(("resources", "today", "reason"), TWO_COURSES)
def test_two_courses_monitoring_counts_from_the_second(
    resources: list[dict[str, Any]], today: date, reason: str
) -> None:
    chart = Chart(resources, courses=[course(COURSE_START), course(date(2027, 1, 11), days=3)])
    assert findings(chart, today)["monitoring-cbc"].reason == reason


# -- each test on time and overdue; pending orders -------------------------------------------------

# The CBC is due a month after the newest one; overdue more than 7 days (local grace) after that.
ON_TIME_AND_OVERDUE = [
    pytest.param("monitoring-cbc", cbc(ago(20)), "on-time", "met", id="CBC 20 days ago: on time"),
    pytest.param(
        "monitoring-cbc",
        cbc(date(2026, 5, 8)),
        "on-time",
        "met",
        id="CBC on 8 May, due 8 June: 7 days late on 15 June is inside the grace period",
    ),
    pytest.param(
        "monitoring-cbc",
        cbc(date(2026, 5, 7)),
        "overdue",
        "work-up",
        id="CBC on 7 May, due 7 June: 8 days late on 15 June is overdue",
    ),
    pytest.param(
        "monitoring-cbc",
        [],
        "overdue",
        "work-up",
        id="no CBC at all since the infusion five months ago: overdue",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(20)), urinalysis(ago(20))],
        "on-time",
        "met",
        id="creatinine and urinalysis 20 days ago: on time",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(20)), urinalysis(ago(60))],
        "overdue",
        "work-up",
        id="urinalysis 60 days ago: overdue even with a recent creatinine",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(60)), urinalysis(ago(20))],
        "overdue",
        "work-up",
        id="creatinine 60 days ago: overdue even with a recent urinalysis",
    ),
    pytest.param(
        "monitoring-thyroid", [tsh(ago(80))], "on-time", "met", id="TSH 80 days ago: on time"
    ),
    pytest.param(
        "monitoring-thyroid", [tsh(ago(110))], "overdue", "work-up", id="TSH 110 days ago: overdue"
    ),
    pytest.param(
        "monitoring-cbc",
        [*cbc(ago(50)), order("57021-8", "CBC W Auto Differential panel - Blood", ago(5))],
        "awaiting-result",
        "pending",
        id="CBC 50 days ago and a CBC ordered 5 days ago: ordered, awaiting the result",
    ),
    pytest.param(
        "monitoring-cbc",
        [
            *cbc(ago(50)),
            order("57021-8", "CBC W Auto Differential panel - Blood", ago(5), "completed"),
        ],
        "overdue",
        "work-up",
        id="a CBC order already completed without a result on file is no pending order",
    ),
    pytest.param(
        "monitoring-cbc",
        [*cbc(ago(50)), order("57021-8", "CBC W Auto Differential panel - Blood", ago(55))],
        "overdue",
        "work-up",
        id="a CBC order older than the last result is no pending order",
    ),
    pytest.param(
        "monitoring-cbc",
        [*cbc(ago(50)), order("57021-8", "CBC W Auto Differential panel - Blood", ago(50))],
        "overdue",
        "work-up",
        id="a CBC order of the day of the last result is the order that result answered",
    ),
    pytest.param(
        "monitoring-cbc",
        [*cbc(ago(90)), order("57021-8", "CBC W Auto Differential panel - Blood", ago(45))],
        "overdue",
        "work-up",
        id="a CBC ordered 45 days ago and never resulted counts for one interval only: overdue",
    ),
    pytest.param(
        "monitoring-thyroid",
        [tsh(ago(110)), order("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", ago(3))],
        "awaiting-result",
        "pending",
        id="TSH 110 days ago and a TSH ordered 3 days ago: pending",
    ),
    pytest.param(
        "monitoring-renal",
        [
            creatinine(ago(20)),
            urinalysis(ago(60)),
            order("24356-8", "Urinalysis complete panel - Urine", ago(2)),
        ],
        "awaiting-result",
        "pending",
        id="urinalysis overdue but ordered 2 days ago: pending",
    ),
]


@pytest.mark.parametrize(("topic", "resources", "reason", "where"), ON_TIME_AND_OVERDUE)
def test_each_test_on_time_overdue_or_pending(
    topic: str, resources: list[dict[str, Any]], reason: str, where: str
) -> None:
    finding = findings(Chart(resources))[topic]
    assert (finding.reason, seen(finding)) == (reason, where)
    if reason == "overdue":
        assert finding.suggestions, "an overdue test comes with its order"
        assert all(s.kind == "lab" for s in finding.suggestions)
    else:
        assert not finding.suggestions


def test_overdue_renal_tests_get_one_order_each() -> None:
    finding = findings(Chart([]))["monitoring-renal"]
    assert [s.key for s in finding.suggestions] == ["order-serum-creatinine", "order-urinalysis"]
    assert worded(finding, POLICY).headline == (
        "Renal monitoring overdue: serum creatinine, urinalysis with cell counts"
    )


# -- thresholds, just above and just below --------------------------------------------------------

THRESHOLDS = [
    # platelets: the ITP threshold (100 x10^9/L) and the lab's range (150-400)
    pytest.param(
        "monitoring-cbc",
        cbc(ago(5), platelets=95),
        "possible-itp",
        "critical card",
        id="platelets 95 x10^9/L: below 100, possible immune thrombocytopenia (critical)",
    ),
    pytest.param(
        "monitoring-cbc",
        cbc(ago(5), platelets=100),
        "abnormal",
        "review",
        id="platelets 100 x10^9/L: not below 100, but below the range (warning)",
    ),
    pytest.param(
        "monitoring-cbc",
        cbc(ago(5), platelets=105),
        "abnormal",
        "review",
        id="platelets 105 x10^9/L: below the range, above 100 (warning)",
    ),
    pytest.param(
        "monitoring-cbc",
        cbc(ago(5), platelets=150),
        "on-time",
        "met",
        id="platelets 150 x10^9/L: the low end of the range is normal",
    ),
    pytest.param(
        "monitoring-cbc",
        [*cbc(ago(40), platelets=282), *cbc(ago(5), platelets=140)],
        "possible-itp",
        "critical card",
        id="platelets 282 then 140 x10^9/L: below the range and down more than half (critical)",
    ),
    pytest.param(
        "monitoring-cbc",
        [*cbc(ago(40), platelets=280), *cbc(ago(5), platelets=140)],
        "abnormal",
        "review",
        id="platelets 280 then 140 x10^9/L: down exactly half, below the range (warning)",
    ),
    pytest.param(
        "monitoring-cbc",
        [*cbc(ago(40), platelets=400), *cbc(ago(5), platelets=180)],
        "on-time",
        "met",
        id="platelets 400 then 180 x10^9/L: a fast fall but within the range",
    ),
    pytest.param(
        "monitoring-cbc",
        cbc(ago(5), neutrophils=1.2),
        "abnormal",
        "review",
        id="neutrophils 1.2 below the range: a possible autoimmune cytopenia (warning)",
    ),
    pytest.param(
        "monitoring-cbc",
        cbc(ago(5), hemoglobin=10.9),
        "abnormal",
        "review",
        id="hemoglobin 10.9 below the range: anemia (warning)",
    ),
    pytest.param(
        "monitoring-cbc",
        cbc(ago(5), lymphocytes=0.3),
        "on-time",
        "met",
        id="lymphocytes 0.3 alone: the intended effect, never a finding",
    ),
    # UPCR 200 mg/g (seed policy)
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5)), urinalysis(ago(5)), upcr(ago(5), 201)],
        "abnormal",
        "review",
        id="UPCR 201 mg/g: above 200 (warning)",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5)), urinalysis(ago(5)), upcr(ago(5), 200)],
        "on-time",
        "met",
        id="UPCR 200 mg/g: not above 200",
    ),
    # creatinine rise > 30% over the pre-treatment value (1.0 mg/dL)
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5), 1.31), urinalysis(ago(5))],
        "abnormal",
        "review",
        id="creatinine 1.31 mg/dL: 31% above the pre-treatment 1.0 (warning)",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5), 1.30), urinalysis(ago(5))],
        "on-time",
        "met",
        id="creatinine 1.30 mg/dL: 30% above, not more",
    ),
    # dipstick protein 1+ without a UPCR
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5)), urinalysis(ago(5)), dipstick_protein(ago(5), "1+")],
        "abnormal",
        "review",
        id="dipstick protein 1+ and no UPCR: measure the ratio (warning)",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5)), urinalysis(ago(5)), dipstick_protein(ago(5), "Trace")],
        "on-time",
        "met",
        id="dipstick protein trace: below 1+",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5)), urinalysis(ago(5)), dipstick_protein(ago(5), "1+"), upcr(ago(5), 120)],
        "on-time",
        "met",
        id="dipstick protein 1+ with a normal UPCR measured: nothing to add",
    ),
    # hematuria
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5)), urinalysis(ago(5), "2+")],
        "abnormal",
        "review",
        id="blood 2+ in the urine with no explanation (warning)",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5)), urinalysis(ago(5), "2+", note="menstruating")],
        "on-time",
        "met",
        id="blood in the urine explained in the result's note (menstruation)",
    ),
    pytest.param(
        "monitoring-renal",
        [
            creatinine(ago(5)),
            urinalysis(ago(5), "2+"),
            condition("N39.0", "Urinary tract infection, site not specified", ago(7)),
        ],
        "on-time",
        "met",
        id="blood in the urine with a current urinary infection on file",
    ),
    # anti-GBM pattern
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5), 1.31), urinalysis(ago(5), "2+")],
        "possible-anti-gbm",
        "critical card",
        id="creatinine up 31% with unexplained hematuria: possible anti-GBM disease (critical)",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5), 1.31), urinalysis(ago(5)), upcr(ago(5), 450)],
        "possible-anti-gbm",
        "critical card",
        id="creatinine up 31% with UPCR 450 mg/g: possible anti-GBM disease (critical)",
    ),
    pytest.param(
        "monitoring-renal",
        [creatinine(ago(5), 1.30), urinalysis(ago(5), "2+")],
        "abnormal",
        "review",
        id="hematuria with creatinine up only 30%: a warning, not the anti-GBM pattern",
    ),
    # TSH and the liver
    pytest.param(
        "monitoring-thyroid",
        [tsh(ago(5), 4.6)],
        "abnormal",
        "review",
        id="TSH 4.6 above the range 0.4-4.5 (warning)",
    ),
    pytest.param(
        "monitoring-thyroid",
        [tsh(ago(5), 4.4)],
        "on-time",
        "met",
        id="TSH 4.4 within the range",
    ),
    pytest.param(
        "monitoring-liver",
        [alt(ago(5), 41)],
        "abnormal",
        "review",
        id="ALT 41 U/L above the range 7-40: possible autoimmune hepatitis (warning)",
    ),
    pytest.param(
        "monitoring-liver",
        [alt(ago(5), 40)],
        "within-range",
        "met",
        id="ALT 40 U/L within range",
    ),
    pytest.param(
        "monitoring-liver",
        [alt(COURSE_START - timedelta(days=10), 80)],
        "within-range",
        "met",
        id="a raised ALT before the first infusion is the baseline check's, not monitoring's",
    ),
]


@pytest.mark.parametrize(("topic", "resources", "reason", "where"), THRESHOLDS)
def test_thresholds(topic: str, resources: list[dict[str, Any]], reason: str, where: str) -> None:
    """Each row on an otherwise up-to-date record (its own CBC replacing this month's)."""
    cbc_codes = {"6690-2", "718-7", "777-3", "751-8", "731-0"}
    base = [
        r
        for r in up_to_date()
        if topic != "monitoring-cbc" or r["code"]["coding"][0]["code"] not in cbc_codes
    ]
    finding = findings(Chart([*base, *resources]))[topic]
    assert (finding.reason, seen(finding)) == (reason, where)


def test_itp_card_names_value_range_and_date() -> None:
    finding = worded(findings(Chart(cbc(ago(5), platelets=95)))["monitoring-cbc"], POLICY)
    assert finding.severity is Severity.CRITICAL
    line = finding.evidence[0].text
    assert "95" in line and "150-400" in line and ago(5).isoformat() in line


# -- complications since the first infusion -------------------------------------------------------

COMPLICATIONS = [
    pytest.param(
        "autoimmune-complication",
        [condition("D69.3", "Immune thrombocytopenic purpura", ago(30))],
        "complication",
        "review",
        id="immune thrombocytopenia since the first infusion (warning naming it)",
    ),
    pytest.param(
        "autoimmune-complication",
        [condition("D69.3", "Immune thrombocytopenic purpura", COURSE_START - timedelta(days=400))],
        "none-since-first-infusion",
        "met",
        id="immune thrombocytopenia before the first infusion is not a complication of it",
    ),
    pytest.param(
        "autoimmune-complication",
        [condition("M31.0", "Hypersensitivity angiitis", ago(10))],
        "complication",
        "review",
        id="anti-GBM disease (M31.0) since the first infusion",
    ),
    pytest.param(
        "autoimmune-complication",
        [condition("K75.4", "Autoimmune hepatitis", ago(10))],
        "complication",
        "review",
        id="autoimmune hepatitis since the first infusion",
    ),
    pytest.param(
        "autoimmune-complication",
        [condition("D59.11", "Warm autoimmune hemolytic anemia", ago(10))],
        "complication",
        "review",
        id="autoimmune hemolytic anemia since the first infusion",
    ),
    pytest.param(
        "autoimmune-complication",
        [condition("E05.00", "Graves disease", ago(10))],
        "none-since-first-infusion",
        "met",
        id="Graves disease is a thyroid finding, not an autoimmune-complication one",
    ),
    pytest.param(
        "monitoring-thyroid",
        [condition("E05.00", "Thyrotoxicosis with diffuse goiter", ago(10))],
        "abnormal",
        "review",
        id="Graves disease since the first infusion (thyroid warning)",
    ),
    pytest.param(
        "monitoring-thyroid",
        [condition("E03.9", "Hypothyroidism, unspecified", COURSE_START - timedelta(days=700))],
        "on-time",
        "met",
        id="hypothyroidism known before treatment is no new thyroid finding",
    ),
]


@pytest.mark.parametrize(("topic", "resources", "reason", "where"), COMPLICATIONS)
def test_complications_since_the_first_infusion(
    topic: str, resources: list[dict[str, Any]], reason: str, where: str
) -> None:
    finding = findings(Chart([*up_to_date(), *resources]))[topic]
    assert (finding.reason, seen(finding)) == (reason, where)


# -- herpes prophylaxis, contraception, skin and HPV (checklist items) ----------------------------

RECENT = date(2026, 5, 11)
"""A course ending 35 days before TODAY: inside the two months of prophylaxis and the four
months of contraception."""

AFTER_COURSE = [
    pytest.param(
        Chart(up_to_date(), courses=[course(RECENT)]),
        "herpes-prophylaxis-after-course",
        "none-within-months",
        "review",
        id="a month after the course with no antiviral: prophylaxis needed (warning, order)",
    ),
    pytest.param(
        Chart([*up_to_date(), acyclovir(RECENT)], courses=[course(RECENT)]),
        "herpes-prophylaxis-after-course",
        "in-use",
        "met",
        id="a month after the course with acyclovir active: met",
    ),
    pytest.param(
        Chart([r for r in up_to_date() if "24467-3" not in str(r)]),
        "herpes-prophylaxis-after-course",
        "no-cd4",
        "to confirm",
        id="five months after, no antiviral and no CD4+ count: an item to confirm, no card",
    ),
    pytest.param(
        Chart([*up_to_date(), cd4(ago(1), 150)]),
        "herpes-prophylaxis-after-course",
        "cd4-low",
        "review",
        id="five months after, CD4+ 150 cells/uL and no antiviral (warning)",
    ),
    pytest.param(
        Chart([*up_to_date(), cd4(ago(1), 200)]),
        "herpes-prophylaxis-after-course",
        "cd4-recovered",
        "met",
        id="five months after, CD4+ 200 cells/uL: prophylaxis may stop",
    ),
    pytest.param(
        Chart(up_to_date(), courses=[course(RECENT)]),
        "contraception-after-course",
        "confirm",
        "to confirm",
        id="a woman of 36 a month after the course: confirm contraception (checklist)",
    ),
    pytest.param(
        Chart(up_to_date(), who=patient(gender="male"), courses=[course(RECENT)]),
        "contraception-after-course",
        "not-applicable",
        "not applicable",
        id="a man: contraception after the course does not apply",
    ),
    pytest.param(
        Chart(up_to_date()),
        "contraception-after-course",
        "not-applicable",
        "not applicable",
        id="a woman five months after the course: past the four months",
    ),
    pytest.param(
        Chart([r for r in up_to_date() if r["resourceType"] != "Procedure"]),
        "monitoring-skin-exam",
        "none-this-year",
        "to confirm",
        id="no skin exam on file: confirm the yearly skin exam (checklist)",
    ),
    pytest.param(
        Chart(up_to_date()),
        "monitoring-skin-exam",
        "done",
        "met",
        id="a skin exam 100 days ago: met",
    ),
    pytest.param(
        Chart(
            [*[r for r in up_to_date() if r["resourceType"] != "Procedure"], skin_exam(ago(400))]
        ),
        "monitoring-skin-exam",
        "none-this-year",
        "to confirm",
        id="a skin exam 400 days ago is more than a year old",
    ),
    pytest.param(
        Chart([r for r in up_to_date() if "30167-1" not in str(r)]),
        "monitoring-hpv",
        "none-this-year",
        "to confirm",
        id="a woman with no HPV screening this year: confirm it (checklist)",
    ),
    pytest.param(
        Chart(up_to_date()),
        "monitoring-hpv",
        "done",
        "met",
        id="HPV screening 100 days ago",
    ),
    pytest.param(
        Chart(up_to_date(), who=patient(gender="male")),
        "monitoring-hpv",
        "not-applicable",
        "not applicable",
        id="a man: HPV screening does not apply",
    ),
]


@pytest.mark.parametrize(("chart", "topic", "reason", "where"), AFTER_COURSE)
def test_after_the_course(chart: Chart, topic: str, reason: str, where: str) -> None:
    finding = findings(chart)[topic]
    assert (finding.reason, seen(finding)) == (reason, where)


# -- the whole answer, the dates and the worklist row ----------------------------------------------


def test_up_to_date_patient_has_nothing_to_show() -> None:
    """A silent control for all nine checks: everything on time, nothing abnormal."""
    shown = {t: f.reason for t, f in findings(Chart(up_to_date())).items() if seen(f) != "met"}
    assert shown == {"contraception-after-course": "not-applicable"}


def test_every_monitoring_rule_gives_a_finding_in_table_order() -> None:
    assert list(findings(Chart(up_to_date()))) == [rule.topic for rule in MONITORING_RULES]


def test_dates_of_the_summary_card() -> None:
    record = Chart([tsh(date(2026, 5, 20))]).record()
    context = monitoring_context(record, TODAY, POLICY)
    assert context is not None
    assert monitoring_dates(record, context, POLICY) == {
        "lastInfusion": "2026-01-09",
        "monitoringEndsOn": "2030-01-09",
        "nextTshDue": "2026-08-20",
        "earliestNextCourse": "2027-01-09",
    }


def test_worklist_row_names_overdue_tests_and_abnormal_values() -> None:
    chart = Chart([*cbc(ago(5), platelets=95), tsh(ago(40)), skin_exam(ago(10)), hpv_test(ago(10))])
    record = chart.record()
    context = monitoring_context(record, TODAY, POLICY)
    assert context is not None
    summary = summarise(evaluate_monitoring(record, context, POLICY), context, POLICY)
    assert summary.urgency is Severity.CRITICAL
    assert summary.overdue == ("serum creatinine", "urinalysis with cell counts")
    assert "CBC with differential" not in summary.overdue
    assert summary.abnormal == (f"platelets 95 x10^3/uL on {ago(5).isoformat()}",)
    assert summary.next_due == date(2026, 1, 9) + timedelta(days=31)


def test_worklist_row_lists_an_overdue_test_even_when_its_last_result_is_critical() -> None:
    """Platelets of 95 two months ago and no CBC since: critical, and the CBC is overdue."""
    chart = Chart([*up_to_date()[5:], *cbc(ago(60), platelets=95)])
    record = chart.record()
    context = monitoring_context(record, TODAY, POLICY)
    assert context is not None
    checked = evaluate_monitoring(record, context, POLICY)
    cbc_finding = dict((rule.topic, f) for rule, f in checked)["monitoring-cbc"]
    assert (cbc_finding.reason, [s.key for s in cbc_finding.suggestions]) == (
        "possible-itp",
        ["order-cbc-differential"],
    )
    summary = summarise(checked, context, POLICY)
    assert (summary.urgency, summary.overdue) == (Severity.CRITICAL, ("CBC with differential",))
