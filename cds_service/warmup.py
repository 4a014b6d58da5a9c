"""Build before the first patient what a hook call would otherwise build on first use.

A fresh process loads the R4B model classes (and the nested element classes pydantic imports
lazily while validating), the value sets, the policy, the prefetch templates and the card
wording the first time a hook call needs them: that first call took 212 ms against 4-6 ms warm.
`warm_up` builds all of it, then evaluates a built-in synthetic alemtuzumab request for each
hook through the pure engine and validates a feedback post for its cards, so what the first real
call would still build is built too.

Pure: package data only, no database, no network, no socket, no metrics, no audit. It may run
before workers fork; `create_app` runs it in every worker (the app is created per worker), and
/readyz reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from .cards import MONITORING_SUMMARY_TOPIC, SUMMARY_TOPIC, card_topic
from .domain.fhirdata import LOINC
from .domain.policy import load_policy
from .domain.record import READ_TYPES
from .domain.terminology import ValueSet, all_value_sets, value_set
from .engine import answer
from .feedback import validate_feedback
from .hook_request import read_hook_request
from .models import load_models
from .services import (
    MONITORING_PREFETCH_TYPES,
    OBSERVATION_VALUE_SETS,
    PREFETCH_TYPES,
    SERVICES,
    prefetch_for,
    prefetch_templates,
)

log = logging.getLogger(__name__)

MODEL_TYPES: tuple[str, ...] = tuple(
    sorted(
        {
            *READ_TYPES,
            *PREFETCH_TYPES.values(),
            *MONITORING_PREFETCH_TYPES.values(),
            "Bundle",
            "OperationOutcome",
        }
    )
)
"""The resource types a hook call validates or accepts from a FHIR server; their R4B models and
every element model they reach are loaded."""

TODAY = date(2026, 1, 5)
"""The synthetic request's "today"; its order starts two weeks later."""
PATIENT_ID = "warm-up-synthetic-patient"
ORDER_ID = "warm-up-alemtuzumab-order"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"


@dataclass(frozen=True)
class WarmUp:
    """What the warm-up did: whether it succeeded, how long it took, and a line for /readyz."""

    ok: bool
    seconds: float
    detail: str


_done: WarmUp | None = None
_lock = threading.Lock()


def warm_up() -> WarmUp:
    """Build everything lazy, once per process (a forked worker inherits it). Never raises: a
    failure is logged and reported (an engine that cannot answer its own synthetic request is
    not ready), so the worker still starts and /readyz says what is wrong."""
    global _done
    with _lock:
        if _done is not None and _done.ok:
            return _done
        started = time.perf_counter()
        try:
            detail = _build()
        except Exception as exc:  # any failure: not ready, with the reason
            log.exception("warm-up failed: the service cannot evaluate a synthetic request")
            _done = WarmUp(False, time.perf_counter() - started, f"failed ({type(exc).__name__})")
            return _done
        seconds = time.perf_counter() - started
        _done = WarmUp(True, seconds, f"{detail} in {seconds * 1000:.0f} ms")
        log.info("warm-up done", extra={"durationMs": round(seconds * 1000, 1)})
        return _done


def _build() -> str:
    value_sets = all_value_sets()
    load_policy()
    prefetch_templates()
    models = load_models(MODEL_TYPES)
    for service in SERVICES:
        request = read_hook_request(synthetic_request(service.hook), service.hook)
        cards = answer(request, service, TODAY).body["cards"]
        if not any(card_topic(card) in (SUMMARY_TOPIC, MONITORING_SUMMARY_TOPIC) for card in cards):
            raise RuntimeError(f"the synthetic {service.hook} request got no summary card")
        validate_feedback(service.id, synthetic_feedback(cards))
    return (
        f"{len(value_sets)} value sets, {models} R4B models, {len(SERVICES)} synthetic "
        "requests evaluated"
    )


# -- the synthetic request ----------------------------------------------------------------------


def _first(vs_id: str) -> tuple[str, str, str]:
    """(system, code, display) of a value set's first code, in a stable order."""
    vs: ValueSet = value_set(vs_id)
    system, code = sorted(vs.codes)[0]
    return system, code, vs.display((system, code))


def _concept(vs_id: str) -> dict[str, Any]:
    system, code, display = _first(vs_id)
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _day(days_before_start: int) -> str:
    return (TODAY + timedelta(days=14 - days_before_start)).isoformat()


def _subject() -> dict[str, str]:
    return {"reference": f"Patient/{PATIENT_ID}"}


def _resources() -> dict[str, list[dict[str, Any]]]:
    """A made-up woman with relapsing MS, a result for every test the rules read, a vaccine, a
    previous DMT, an allergy and a past infusion: every prefetch type, every lab rule."""
    negative = _concept("result-negative")
    observations = [
        {
            "resourceType": "Observation",
            "id": f"warm-up-{vs_id}",
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
            "code": {
                "coding": [
                    {
                        "system": LOINC,
                        "code": min(
                            code for system, code in value_set(vs_id).codes if system == LOINC
                        ),
                    }
                ]
            },
            "subject": _subject(),
            "effectiveDateTime": _day(20),
            "valueCodeableConcept": negative,
            "interpretation": [negative],
        }
        for vs_id in OBSERVATION_VALUE_SETS
    ]
    return {
        "Patient": [
            {
                "resourceType": "Patient",
                "id": PATIENT_ID,
                "gender": "female",
                "birthDate": "1990-03-01",
                "name": [{"family": "Synthetic"}],
            }
        ],
        "Condition": [
            {
                "resourceType": "Condition",
                "id": "warm-up-ms",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": _concept("ms-diagnosis-condition"),
                "subject": _subject(),
                "onsetDateTime": "2019-06-01",
            }
        ],
        "Observation": observations,
        "Immunization": [
            {
                "resourceType": "Immunization",
                "id": "warm-up-varicella",
                "status": "completed",
                "vaccineCode": _concept("varicella-vaccines-cvx"),
                "patient": _subject(),
                "occurrenceDateTime": "1995-05-01",
            }
        ],
        "MedicationStatement": [
            {
                "resourceType": "MedicationStatement",
                "id": "warm-up-dmt",
                "status": "completed",
                "medicationCodeableConcept": _concept("ms-dmt-rxnorm"),
                "subject": _subject(),
                "effectivePeriod": {"start": "2020-01-01", "end": "2024-01-01"},
            }
        ],
        "MedicationRequest": [],
        "MedicationAdministration": [],
        "AllergyIntolerance": [
            {
                "resourceType": "AllergyIntolerance",
                "id": "warm-up-allergy",
                "patient": _subject(),
                "code": {"text": "peanut"},
            }
        ],
    }


def _infusion() -> dict[str, Any]:
    """A Lemtrada infusion given three months before the warm-up's today."""
    return {
        "resourceType": "MedicationAdministration",
        "id": "warm-up-infusion",
        "status": "completed",
        "medicationCodeableConcept": _concept("alemtuzumab-lemtrada-rxnorm"),
        "subject": _subject(),
        "effectiveDateTime": (TODAY - timedelta(days=91)).isoformat(),
    }


def _order() -> dict[str, Any]:
    system, code, display = _first("alemtuzumab-lemtrada-rxnorm")
    return {
        "resourceType": "MedicationRequest",
        "id": ORDER_ID,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": system, "code": code, "display": display}],
            "text": "Lemtrada",
        },
        "subject": _subject(),
        "authoredOn": TODAY.isoformat(),
        "reasonCode": [_concept("ms-diagnosis-condition")],
        "dosageInstruction": [
            {
                "text": "12 mg IV infusion over 4 hours once daily on 5 consecutive days",
                "route": {
                    "coding": [
                        {"system": SNOMED, "code": "47625008", "display": "Intravenous route"}
                    ]
                },
                "doseAndRate": [
                    {
                        "doseQuantity": {
                            "value": 12,
                            "unit": "mg",
                            "code": "mg",
                            "system": "http://unitsofmeasure.org",
                        }
                    }
                ],
                "timing": {
                    "repeat": {
                        "boundsPeriod": {"start": _day(0), "end": _day(-4)},
                        "count": 5,
                        "frequency": 1,
                        "period": 1,
                        "periodUnit": "d",
                    }
                },
            }
        ],
    }


def synthetic_request(hook: str) -> dict[str, Any]:
    """A complete CDS Hooks request for a made-up patient (no real person), with a prefetch
    for every key the services declare."""
    by_type = _resources()
    templates, types = prefetch_for(hook)
    if hook == "patient-view":  # monitored: an infusion three months before today
        by_type["MedicationAdministration"] = [_infusion()]
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        resource_type = types[key]
        found = by_type.get(resource_type, [])
        if "?" not in template:  # a read: the resource itself
            prefetch[key] = found[0] if found else None
        else:
            prefetch[key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(found),
                "entry": [{"resource": r} for r in found],
            }
            by_type[resource_type] = []  # each resource in one key only
    context: dict[str, Any] = {
        "userId": "Practitioner/warm-up",
        "patientId": PATIENT_ID,
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": _order()}],
        },
    }
    if hook == "order-select":
        context["selections"] = [f"MedicationRequest/{ORDER_ID}"]
    if hook == "patient-view":  # no draft orders
        del context["draftOrders"]
    return {
        "hook": hook,
        "hookInstance": f"warm-up-{hook}",
        "context": context,
        "prefetch": prefetch,
    }


def synthetic_feedback(cards: list[dict[str, Any]]) -> dict[str, Any]:
    """A feedback post for the synthetic cards: one override with a reason and a comment, one
    accepted suggestion (validated only, never stored)."""
    card = cards[0]["uuid"]
    return {
        "feedback": [
            {
                "card": card,
                "outcome": "overridden",
                "outcomeTimestamp": "2026-01-05T10:05:31Z",
                "overrideReason": {
                    "reason": {"system": "http://example.org/reason", "code": "warm-up"},
                    "userComment": "warm-up",
                },
            },
            {
                "card": card,
                "outcome": "accepted",
                "outcomeTimestamp": "2026-01-05T10:05:31Z",
                "acceptedSuggestions": [{"id": card}],
            },
        ]
    }
