"""The CDS services this server offers, declared once: the table is also the discovery payload."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

from .domain.checklist import CARD_CONTRACT_VERSION, CONTRACT_EXTENSION
from .domain.fhirdata import LOINC
from .domain.policy import load_policy
from .domain.rules import RULES, Rule
from .domain.rules.monitoring import MONITORING_RULES
from .domain.terminology import value_set


def _observation_value_sets(rules: tuple[Rule, ...] = RULES) -> tuple[str, ...]:
    """The value sets of LOINC tests the checks declare they read (Rule.value_sets), in rule
    order; value sets of LOINC answers (LA codes: Positive, Negative...) name results, not tests."""
    out: list[str] = []
    for rule in rules:
        for vs_id in rule.value_sets:
            if vs_id not in out and any(
                system == LOINC and not code.startswith("LA")
                for system, code in value_set(vs_id).codes
            ):
                out.append(vs_id)
    return tuple(out)


OBSERVATION_VALUE_SETS: tuple[str, ...] = _observation_value_sets()
"""LOINC value sets whose Observations the rules read, derived from the rule table. The service
picks these codes out of what it is sent (PatientRecord indexes by code; rules read only their
value sets), so the prefetch asks for laboratory Observations without listing codes, plus, by
code, only the few concepts flagged as possibly filed outside the laboratory category
(terminology.OUTSIDE_LABORATORY_EXT)."""

# Prefetch key -> (resource type, FHIR query template). Only {{context.patientId}} is used.
PREFETCH_TYPES: dict[str, str] = {
    "patient": "Patient",
    "conditions": "Condition",
    "observations": "Observation",
    "observationsByCode": "Observation",
    "immunizations": "Immunization",
    "medicationStatements": "MedicationStatement",
    "medicationRequests": "MedicationRequest",
    "medicationAdministrations": "MedicationAdministration",
    "allergies": "AllergyIntolerance",
}


MAX_PREFETCH_URL_CHARS = 2000
"""Longest URL-encoded prefetch query allowed (64-character patient id substituted): EHRs and
proxies commonly refuse longer URLs. tests/test_prefetch.py holds every template to it."""


MONITORING_OBSERVATION_VALUE_SETS: tuple[str, ...] = _observation_value_sets(MONITORING_RULES)
"""The same for the monitoring checks (the patient-view service)."""


def outside_laboratory_codes(
    value_sets: tuple[str, ...] = OBSERVATION_VALUE_SETS,
) -> list[str]:
    """LOINC codes of tests that may be filed outside the laboratory category: asked for by code."""
    codes = {
        code
        for vs_id in value_sets
        for system, code in value_set(vs_id).outside_laboratory
        if system == LOINC
    }
    return sorted(codes)


@cache
def prefetch_templates() -> Mapping[str, str]:
    """The FHIR queries an EHR should prefetch (or the service fetches itself).

    Built once per process (the value sets do not change at run time), not on every hook call;
    read-only so that no caller can alter what every later call sees.

    Observations come through two keys so that no URL grows with the value sets: `observations`
    asks for every laboratory result (no codes listed; the service keeps the codes it knows), and
    `observationsByCode` for the few tests a clinic may file under another category or none.
    A result filed both ways arrives twice and counts once (PatientRecord.build)."""
    patient = "{{context.patientId}}"
    outside = ",".join(f"{LOINC}|{code}" for code in outside_laboratory_codes())
    return MappingProxyType(
        {
            "patient": f"Patient/{patient}",
            "conditions": f"Condition?patient={patient}",
            "observations": f"Observation?patient={patient}&category=laboratory",
            "observationsByCode": f"Observation?patient={patient}&code={outside}",
            "immunizations": f"Immunization?patient={patient}",
            "medicationStatements": f"MedicationStatement?patient={patient}",
            "medicationRequests": f"MedicationRequest?patient={patient}",
            "medicationAdministrations": f"MedicationAdministration?patient={patient}",
            "allergies": f"AllergyIntolerance?patient={patient}",
        }
    )


MONITORING_PREFETCH_TYPES: dict[str, str] = {
    "patient": "Patient",
    "conditions": "Condition",
    "observations": "Observation",
    "observationsByCode": "Observation",
    "medicationStatements": "MedicationStatement",
    "medicationRequests": "MedicationRequest",
    "medicationAdministrations": "MedicationAdministration",
    "serviceRequests": "ServiceRequest",
    "procedures": "Procedure",
}
"""The patient-view service's prefetch keys: what monitoring reads (no immunizations or
allergies; active ServiceRequests are the pending orders, Procedures the skin examinations and
HPV screening)."""


@cache
def monitoring_prefetch_templates() -> Mapping[str, str]:
    """The FHIR queries of the monitoring service, built like `prefetch_templates`: the patient's
    infusion history (the three medication types, as the course-interval check reads them), every
    laboratory result plus the monitoring tests a clinic may file elsewhere, the Conditions
    (autoimmune complications), the active orders (a test ordered is not overdue) and the
    Procedures."""
    patient = "{{context.patientId}}"
    outside = ",".join(
        f"{LOINC}|{code}" for code in outside_laboratory_codes(MONITORING_OBSERVATION_VALUE_SETS)
    )
    templates = {
        "patient": f"Patient/{patient}",
        "conditions": f"Condition?patient={patient}",
        "observations": f"Observation?patient={patient}&category=laboratory",
        "observationsByCode": f"Observation?patient={patient}&code={outside}",
        "medicationStatements": f"MedicationStatement?patient={patient}",
        "medicationRequests": f"MedicationRequest?patient={patient}",
        "medicationAdministrations": f"MedicationAdministration?patient={patient}",
        "serviceRequests": f"ServiceRequest?patient={patient}&status=active",
        "procedures": f"Procedure?patient={patient}",
    }
    if not outside:  # no monitoring test is flagged as filed outside the laboratory
        del templates["observationsByCode"]
    return MappingProxyType(templates)


PrefetchSet = tuple[Callable[[], Mapping[str, str]], Mapping[str, str]]
PREFETCH_BY_HOOK: dict[str, PrefetchSet] = {
    "order-select": (prefetch_templates, PREFETCH_TYPES),
    "order-sign": (prefetch_templates, PREFETCH_TYPES),
    "patient-view": (monitoring_prefetch_templates, MONITORING_PREFETCH_TYPES),
}
"""Each hook's prefetch templates and the resource type of each key (discovery, the engine and
`cds-service validate` read the same pair)."""


def prefetch_for(hook: str) -> tuple[Mapping[str, str], Mapping[str, str]]:
    """(templates, key -> resource type) of the service answering `hook`."""
    templates, types = PREFETCH_BY_HOOK.get(hook, PREFETCH_BY_HOOK["order-select"])
    declared = templates()
    return declared, {key: types[key] for key in declared}


@dataclass(frozen=True)
class ServiceDefinition:
    """One CDS service: its id, the hook it answers and what it tells the EHR at discovery."""

    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str

    def discovery(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "usageRequirements": self.usage_requirements,
            "prefetch": dict(prefetch_for(self.hook)[0]),
            "extension": {CONTRACT_EXTENSION: {"version": CARD_CONTRACT_VERSION}},
        }


def _checks(hook: str) -> str:
    return ", ".join(rule.topic for rule in RULES if hook in rule.hooks)


MONITORING_USAGE = (
    "Send context.patientId (and userId) with either the prefetch listed here or fhirServer with "
    "fhirAuthorization. Alemtuzumab infusions are read from the patient's "
    "MedicationAdministrations, MedicationStatements and MedicationRequests; a patient with none, "
    "whose monitoring has ended or who is recorded as deceased gets no cards."
)


USAGE = (
    "Send context.draftOrders with the alemtuzumab MedicationRequest (coded with RxNorm, or named "
    "in text; medicationReference resolved from draftOrders, prefetch or contained) and either the "
    "prefetch listed here or fhirServer with fhirAuthorization. Set the planned first infusion in "
    "dosageInstruction.timing. Orders for other drugs get no cards."
)

SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id="lemtrada-order-select",
        hook="order-select",
        title="Lemtrada (alemtuzumab) eligibility at order selection",
        description="Checks a selected alemtuzumab (Lemtrada) order for relapsing MS against the "
        "label and REMS requirements: " + _checks("order-select") + ". Returns one card per "
        "unmet check and a checklist card.",
        usage_requirements=USAGE,
    ),
    ServiceDefinition(
        id="lemtrada-order-sign",
        hook="order-sign",
        title="Lemtrada (alemtuzumab) eligibility at order signing",
        description="Checks every alemtuzumab (Lemtrada) order being signed against the label and "
        "REMS requirements: " + _checks("order-sign") + ". Returns one card per unmet check and "
        "the pharmacist's checklist card.",
        usage_requirements=USAGE,
    ),
    ServiceDefinition(
        id="lemtrada-monitoring",
        hook="patient-view",
        title="Lemtrada (alemtuzumab) safety monitoring after the infusions",
        description="For a patient treated with alemtuzumab (Lemtrada), checks the monitoring the "
        "label and REMS ask for until "
        f"{load_policy()['monitoring_months']} months after the last infusion: "
        + ", ".join(rule.topic for rule in MONITORING_RULES)
        + ". Returns a card per critical finding, a work-up card for overdue tests, a review "
        "card and the monitoring checklist card.",
        usage_requirements=MONITORING_USAGE,
    ),
)

SERVICES_BY_ID = {service.id: service for service in SERVICES}
