"""The CDS services this server offers, declared once: the table is also the discovery payload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

from .domain.checklist import CARD_CONTRACT_VERSION, CONTRACT_EXTENSION
from .domain.fhirdata import LOINC
from .domain.rules import RULES
from .domain.terminology import value_set


def _observation_value_sets() -> tuple[str, ...]:
    """The value sets of LOINC tests the checks declare they read (Rule.value_sets), in rule
    order; value sets of LOINC answers (LA codes: Positive, Negative...) name results, not tests."""
    out: list[str] = []
    for rule in RULES:
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


def outside_laboratory_codes() -> list[str]:
    """LOINC codes of tests that may be filed outside the laboratory category: asked for by code."""
    codes = {
        code
        for vs_id in OBSERVATION_VALUE_SETS
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
            "prefetch": dict(prefetch_templates()),
            "extension": {CONTRACT_EXTENSION: {"version": CARD_CONTRACT_VERSION}},
        }


def _checks(hook: str) -> str:
    return ", ".join(rule.topic for rule in RULES if hook in rule.hooks)


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
)

SERVICES_BY_ID = {service.id: service for service in SERVICES}
