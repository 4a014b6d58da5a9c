"""Indication and age (label sections 1 and 8.4): relapsing MS in adults, not PPMS or CIS."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ..fhirdata import DateSpan, parse_date, reference_of, years_between
from ..findings import Evidence, Finding, Severity, Status
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord, Unreadable
from ..terminology import value_set
from .base import Rule
from .conditions import current_conditions, shorten

INDICATION = "indication"
AGE = "age"


def check_indication(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Relapsing MS on the problem list; only primary progressive MS or CIS is not indicated.

    'remission' counts as current here: relapsing-remitting MS between relapses is still the
    indication.
    """
    ms, ppms, cis = (
        value_set("ms-diagnosis-condition"),
        value_set("ms-primary-progressive-condition"),
        value_set("clinically-isolated-syndrome-condition"),
    )
    hits, unreadable = current_conditions(record, [ms, cis], also=frozenset({"remission"}))
    not_indicated = [h for h in hits if record.member(h.code, ppms) or record.member(h.code, cis)]
    indicated = [h for h in hits if h not in not_indicated]
    evidence = tuple(h.evidence() for h in indicated + not_indicated)
    if indicated:
        return Finding(
            INDICATION,
            Status.MET,
            Severity.INFO,
            reason="ms-on-file",
            evidence=evidence,
            unreadable=tuple(unreadable),
        )
    if not_indicated:
        return Finding(
            INDICATION,
            Status.NOT_MET,
            Severity.WARNING,
            reason="not-indicated",
            facts={"condition": shorten(not_indicated[0].name)},
            evidence=evidence,
            unreadable=tuple(unreadable),
        )
    return Finding(
        INDICATION,
        Status.UNKNOWN,
        Severity.WARNING,
        reason="no-ms-diagnosis",
        unreadable=tuple(unreadable),
    )


INDICATION_RULE = Rule(
    topic=INDICATION,
    title="Relapsing multiple sclerosis",
    logic="No current MS Condition (ICD-10-CM G35.x, SNOMED CT MS concepts; remission "
    "counts) -> warning; only primary progressive MS or clinically isolated syndrome -> "
    "warning (not indicated).",
    indicator="warning",
    source="label",
    citation="PI section 1 (Indications and Usage: relapsing forms of MS in adults; not "
    "recommended for clinically isolated syndrome)",
    check=check_indication,
    value_sets=(
        "clinically-isolated-syndrome-condition",
        "ms-diagnosis-condition",
        "ms-primary-progressive-condition",
    ),
    override_reasons=("recipient-disagrees-evidence", "risk-benefit-ratio"),
)


@dataclass(frozen=True)
class Age:
    """Completed years at T0 as a range (a partial birthDate gives a youngest and an oldest age)."""

    youngest: int
    oldest: int
    born: DateSpan

    def __str__(self) -> str:
        if self.youngest == self.oldest:
            return str(self.youngest)
        return f"{self.youngest}-{self.oldest}"


def age_at(record: PatientRecord, t0: date) -> tuple[Age | None, tuple[Evidence, ...]]:
    """The patient's age at T0, or None and why it cannot be told (an evidence part)."""
    patient = record.patient
    if patient is None:
        return None, (Evidence("no-patient"),)
    problem = record.problem(patient)
    if problem is not None:
        return None, (
            Evidence(
                "patient-unreadable", {"reference": reference_of(patient), "problem": problem}
            ),
        )
    born = parse_date(patient.get("birthDate"))
    if born is None:
        return None, (Evidence("no-birth-date", {"reference": reference_of(patient)}),)
    return Age(years_between(born.latest, t0), years_between(born.earliest, t0), born), ()


def check_age(record: PatientRecord, order: OrderContext, policy: Policy) -> Finding:
    """Warning under the pediatric age at T0; an unknown birth date is not an all-clear."""
    limit = policy["pediatric_age"]
    age, why = age_at(record, order.t0)
    if age is None:
        unreadable: tuple[Unreadable, ...] = ()
        if record.patient is not None and record.problem(record.patient) is not None:
            unreadable = (
                Unreadable(reference_of(record.patient), str(record.problem(record.patient))),
            )
        return Finding(
            AGE,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="unknown",
            facts={"why": why},
            unreadable=unreadable,
        )
    patient = record.patient
    assert patient is not None
    evidence = (
        Evidence(
            "age",
            {
                "born": str(age.born),
                "reference": reference_of(patient),
                "age": str(age),
                "t0": order.t0.isoformat(),
            },
        ),
    )
    if age.oldest < limit:
        return Finding(
            AGE,
            Status.NOT_MET,
            Severity.WARNING,
            reason="under-age",
            facts={"age": str(age)},
            evidence=evidence,
        )
    if age.youngest < limit:
        return Finding(
            AGE, Status.UNKNOWN, Severity.WARNING, reason="maybe-under-age", evidence=evidence
        )
    return Finding(
        AGE, Status.MET, Severity.INFO, reason="adult", facts={"age": str(age)}, evidence=evidence
    )


AGE_RULE = Rule(
    topic=AGE,
    title="Adult patient ({pediatric_age} or older)",
    logic="Age at T0 from Patient.birthDate below the pediatric limit -> warning; birthDate "
    "missing, unreadable or too partial to tell -> warning.",
    indicator="warning",
    source="label",
    citation="PI section 8.4 (Pediatric Use: not recommended below 17 years)",
    check=check_age,
    value_sets=(),
    policy_keys=("pediatric_age",),
    override_reasons=("risk-benefit-ratio", "recipient-disagrees-evidence"),
)
