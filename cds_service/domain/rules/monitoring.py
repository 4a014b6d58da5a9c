"""REMS safety monitoring after the infusion (patient-view): the nine monitoring checks.

Each check reads the record against a MonitoringContext (domain/monitoring.py: the Lemtrada
courses on file, today) instead of an order. Intervals are calendar months from the last
infusion of the last course; a grace period (local policy) separates due from overdue. A test
ordered (active ServiceRequest) after its newest result is awaiting its result for one interval.
"""

from __future__ import annotations

from datetime import date

from ..findings import Finding, Severity, Status
from ..monitoring import MonitoringContext, MonitoringSummary
from ..policy import Policy
from ..record import PatientRecord
from .base import PATIENT_VIEW, Rule

CBC = "monitoring-cbc"
RENAL = "monitoring-renal"
THYROID = "monitoring-thyroid"
LIVER = "monitoring-liver"
AUTOIMMUNE = "autoimmune-complication"
HERPES_AFTER = "herpes-prophylaxis-after-course"
CONTRACEPTION_AFTER = "contraception-after-course"
SKIN_EXAM = "monitoring-skin-exam"
HPV = "monitoring-hpv"


def _placeholder(topic: str) -> Finding:
    return Finding(topic, Status.MET, Severity.INFO, reason="on-time")


def check_cbc(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """CBC with differential monthly since the last infusion; platelets, neutrophils and
    hemoglobin read against the lab's range and the ITP threshold."""
    return _placeholder(CBC)


CBC_RULE = Rule(
    topic=CBC,
    title="CBC with differential monthly until {monitoring_months} months after the last infusion",
    logic="placeholder",
    indicator="critical",
    source="label",
    citation="PI boxed warning and section 5 (immune thrombocytopenia): CBC with differential "
    "before treatment and at monthly intervals until 48 months after the last infusion",
    check=check_cbc,
    hooks=PATIENT_VIEW,
)


def check_renal(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """Serum creatinine and urinalysis with cell counts monthly; UPCR, dipstick protein,
    creatinine rise and unexplained hematuria; rise with hematuria or UPCR is critical."""
    return _placeholder(RENAL)


RENAL_RULE = Rule(
    topic=RENAL,
    title="Serum creatinine and urinalysis monthly until {monitoring_months} months after the "
    "last infusion",
    logic="placeholder",
    indicator="critical",
    source="label",
    citation="PI boxed warning and section 5 (glomerular nephropathies including anti-GBM "
    "disease): serum creatinine and urinalysis with urine cell counts at monthly intervals until "
    "48 months after the last infusion",
    check=check_renal,
    hooks=PATIENT_VIEW,
)


def check_thyroid(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """TSH every three months; TSH outside the lab's range; a thyroid disorder with onset after
    the first infusion."""
    return _placeholder(THYROID)


THYROID_RULE = Rule(
    topic=THYROID,
    title="TSH every {tsh_interval} months until {monitoring_months} months after the last "
    "infusion",
    logic="placeholder",
    indicator="warning",
    source="label",
    citation="PI section 5 (thyroid disorders): thyroid function tests before treatment and "
    "every 3 months until 48 months after the last infusion",
    check=check_thyroid,
    hooks=PATIENT_VIEW,
)


def check_liver(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """ALT, AST or total bilirubin above the lab's range since the first infusion."""
    return _placeholder(LIVER)


LIVER_RULE = Rule(
    topic=LIVER,
    title="Transaminases and bilirubin within range",
    logic="placeholder",
    indicator="warning",
    source="label",
    citation="PI section 5 (autoimmune hepatitis): serum transaminases and total bilirubin "
    "before treatment and periodically until 48 months after the last infusion",
    check=check_liver,
    hooks=PATIENT_VIEW,
)


def check_autoimmune(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """A Condition of the autoimmune-complication set with onset after the first infusion."""
    return _placeholder(AUTOIMMUNE)


AUTOIMMUNE_RULE = Rule(
    topic=AUTOIMMUNE,
    title="No autoimmune complication since the first infusion",
    logic="placeholder",
    indicator="warning",
    source="label",
    citation="PI boxed warning and section 5 (immune thrombocytopenia, "
    "anti-GBM disease, autoimmune cytopenias, autoimmune hepatitis)",
    check=check_autoimmune,
    hooks=PATIENT_VIEW,
)


def check_herpes_after(
    record: PatientRecord, context: MonitoringContext, policy: Policy
) -> Finding:
    """Antiviral herpes prophylaxis for at least two months after the last infusion, or until
    CD4+ is at least 200 cells/uL, whichever is later."""
    return _placeholder(HERPES_AFTER)


HERPES_AFTER_RULE = Rule(
    topic=HERPES_AFTER,
    title="Antiviral herpes prophylaxis after the course",
    logic="placeholder",
    indicator="warning",
    source="label",
    citation="PI section 2 (Herpes Prophylaxis): antiviral prophylaxis for at least 2 months "
    "after treatment or until CD4+ >= 200 cells/uL, whichever is later",
    check=check_herpes_after,
    hooks=PATIENT_VIEW,
)


def check_contraception_after(
    record: PatientRecord, context: MonitoringContext, policy: Policy
) -> Finding:
    """A patient who may be pregnant, within four months after a course: confirm
    contraception (checklist only)."""
    return _placeholder(CONTRACEPTION_AFTER)


CONTRACEPTION_AFTER_RULE = Rule(
    topic=CONTRACEPTION_AFTER,
    title="Contraception for {contraception_after_course} months after each course",
    logic="placeholder",
    indicator="info",
    source="label",
    citation="PI section 8.3: effective contraception during and for 4 months after each "
    "treatment course",
    check=check_contraception_after,
    hooks=PATIENT_VIEW,
)


def check_skin_exam(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """A skin examination within the last year (checklist only)."""
    return _placeholder(SKIN_EXAM)


SKIN_EXAM_RULE = Rule(
    topic=SKIN_EXAM,
    title="Yearly skin examination",
    logic="placeholder",
    indicator="info",
    source="label",
    citation="PI section 5 (malignancies, melanoma): yearly skin examinations",
    check=check_skin_exam,
    hooks=PATIENT_VIEW,
)


def check_hpv(record: PatientRecord, context: MonitoringContext, policy: Policy) -> Finding:
    """Yearly HPV screening for women (checklist only)."""
    return _placeholder(HPV)


HPV_RULE = Rule(
    topic=HPV,
    title="Yearly HPV screening",
    logic="placeholder",
    indicator="info",
    source="label",
    citation="PI section 5 (Infections: human papillomavirus): yearly HPV screening for women",
    check=check_hpv,
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
    from ..evaluate import guarded

    return [(rule, guarded(rule, record, context, policy)) for rule in MONITORING_RULES]


def next_due(record: PatientRecord, context: MonitoringContext, policy: Policy, test: str) -> date:
    """The day a monitored test ("cbc", "creatinine", "urinalysis", "tsh") is next due."""
    return context.last_infusion


def summary_parts(
    checked: list[tuple[Rule, Finding]], context: MonitoringContext, policy: Policy
) -> MonitoringSummary:
    """domain/monitoring.py summarise(), over the findings of this module."""
    return MonitoringSummary(Severity.INFO, (), (), None)
