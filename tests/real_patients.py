"""Every externally authored patient of fhir_fixtures/real/ (and the 4 Synthea bundles of base/),
as an EHR would send it to the service at order-select.

Used by tests/test_real_patients.py, tests/real_patient_facts.py and bench/real_patients.py.

- `patients()`: one `RealPatient` per patient (dataset, short key, its resources, its T0).
- `answer_prefetch(templates, patient_id, resources)`: what an EHR answers for the service's own
  prefetch templates (discovery), by evaluating each query against the patient's resources. Only
  the query shapes the templates use are understood (`Patient/<id>`; `<Type>?patient=<id>` with
  optional `category=` and `code=` token lists, `system|code` or bare `code`, comma meaning OR);
  any other shape raises `UnsupportedQuery`, so a changed template fails loudly instead of being
  answered wrongly.
- `order_select_request(patient, templates)`: the order-select request for a Lemtrada first
  course (fhir_fixtures/orders/lemtrada-first-course.json) starting on the patient's T0.

T0 is pinned per dataset, shortly after the dataset's newest data (the data is old, and a test
must not depend on today's date):

- Synthea R4 bundles: newest data 2021-03-18 (Dannie Schmitt) -> T0 2021-03-29 (a Monday), so
  that the newest results (a CBC 11 days, a creatinine 27 days before) fall in the 30-day
  baseline-lab window and are read.
- Synthea bulk 10 patients: newest data 2023-02-05 (a MedicationRequest) -> T0 2023-03-06.
- US Core examples: newest data 2022-09-23 (pregnancy intent) -> T0 2022-10-24.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fhir_fixtures"
REAL = FIXTURES / "real"
ORDER_FILE = FIXTURES / "orders" / "lemtrada-first-course.json"
SERVICE_PATH = "/cds-services/lemtrada-order-select"
USER_ID = "Practitioner/example"

T0 = {
    "synthea-r4": dt.date(2021, 3, 29),
    "bulk": dt.date(2023, 3, 6),
    "us-core": dt.date(2022, 10, 24),
}
"""Planned first infusion per dataset, shortly after the dataset's newest data."""

SYNTHEA_R4_FILES = (
    *sorted((FIXTURES / "base").glob("*_*-*-*-*-*.json")),
    *sorted((REAL / "synthea-r4").glob("*.json")),
)


@dataclass(frozen=True)
class RealPatient:
    """One patient: its dataset, a short key (`dataset/short id`), id and resources."""

    dataset: str
    short: str
    patient_id: str
    resources: tuple[dict[str, Any], ...]

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.short}"

    @property
    def t0(self) -> dt.date:
        return T0[self.dataset]

    @property
    def patient(self) -> dict[str, Any]:
        return next(r for r in self.resources if r["resourceType"] == "Patient")


class UnsupportedQuery(ValueError):
    """A prefetch template whose shape this evaluator does not understand."""


def _synthea_r4() -> list[RealPatient]:
    out = []
    for path in SYNTHEA_R4_FILES:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        resources = tuple(entry["resource"] for entry in bundle["entry"])
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        short = "_".join(path.stem.split("_")[:2])  # Liz_Conn_27c9... -> Liz_Conn
        out.append(RealPatient("synthea-r4", short, patient["id"], resources))
    return out


def _bulk() -> list[RealPatient]:
    folder = REAL / "synthea-bulk-10-patients"
    everything = [
        json.loads(line)
        for path in sorted(folder.glob("*.ndjson"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    out = []
    for patient in (r for r in everything if r["resourceType"] == "Patient"):
        own = [r for r in everything if r is patient or subject_id(r) == patient["id"]]
        out.append(RealPatient("bulk", patient["id"][:8], patient["id"], tuple(own)))
    return out


def _us_core() -> list[RealPatient]:
    everything = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((REAL / "us-core").glob("*.json"))
    ]
    out = []
    for patient in (r for r in everything if r["resourceType"] == "Patient"):
        own = [r for r in everything if r is patient or subject_id(r) == patient["id"]]
        out.append(RealPatient("us-core", patient["id"], patient["id"], tuple(own)))
    return out


def patients() -> list[RealPatient]:
    """Every real-data patient, Synthea R4 first, then bulk, then US Core."""
    return [*_synthea_r4(), *_bulk(), *_us_core()]


def subject_id(resource: dict[str, Any]) -> str | None:
    """The patient id a resource's subject/patient refers to (`Patient/<id>` or `urn:uuid:<id>`)."""
    for element in ("subject", "patient"):
        ref = resource.get(element)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            value: str = ref["reference"]
            if value.startswith("urn:uuid:"):
                return value.removeprefix("urn:uuid:")
            if value.startswith("Patient/"):
                return value.removeprefix("Patient/")
    return None


def _codings(resource: dict[str, Any], element: str) -> list[dict[str, Any]]:
    value = resource.get(element)
    concepts = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [c for concept in concepts for c in concept.get("coding", [])]


def _token_match(element: str, value: str) -> Callable[[dict[str, Any]], bool]:
    """FHIR token search on a CodeableConcept element: `system|code` or `code`, comma = OR."""
    wanted = [(t.split("|", 1) if "|" in t else [None, t]) for t in value.split(",")]

    def match(resource: dict[str, Any]) -> bool:
        return any(
            c.get("code") == code and (system is None or c.get("system") == system)
            for c in _codings(resource, element)
            for system, code in wanted
        )

    return match


SEARCH_PARAMS = {"category": "category", "code": "code"}
"""Search parameters (besides `patient`) the evaluator understands -> the element they search."""


def evaluate(query: str, patient_id: str, resources: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The FHIR answer to one prefetch query (placeholder already substituted)."""
    if "?" not in query:
        resource_type, _, rid = query.partition("/")
        if resource_type != "Patient" or rid != patient_id:
            raise UnsupportedQuery(query)
        return next(r for r in resources if r["resourceType"] == "Patient")
    resource_type, _, params = query.partition("?")
    tests: list[Callable[[dict[str, Any]], bool]] = []
    seen_patient = False
    for name, value in parse_qsl(params, keep_blank_values=True, strict_parsing=True):
        if name == "patient":
            if value != patient_id:
                raise UnsupportedQuery(query)
            seen_patient = True
        elif name in SEARCH_PARAMS:
            tests.append(_token_match(SEARCH_PARAMS[name], value))
        else:
            raise UnsupportedQuery(f"{query} (parameter {name})")
    if not seen_patient:
        raise UnsupportedQuery(f"{query} (no patient parameter)")
    matches = [
        r
        for r in resources
        if r["resourceType"] == resource_type
        and subject_id(r) == patient_id
        and all(test(r) for test in tests)
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "entry": [
            {"fullUrl": f"http://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
            for r in matches
        ],
    }


def answer_prefetch(
    templates: Mapping[str, str], patient_id: str, resources: tuple[dict[str, Any], ...]
) -> dict[str, Any]:
    """Every prefetch key answered from the patient's own resources."""
    return {
        key: evaluate(template.replace("{{context.patientId}}", patient_id), patient_id, resources)
        for key, template in templates.items()
    }


def _substitute(node: Any, t0: dt.date, patient_ref: str) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, t0, patient_ref) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, t0, patient_ref) for v in node]
    if node == "{{patientRef}}":
        return patient_ref
    if isinstance(node, str) and node.startswith("{{T0"):
        days = int(node[4:-3] or 0) if node != "{{T0}}" else 0  # "{{T0-14d}}" -> -14
        return (t0 + dt.timedelta(days=days)).isoformat()
    return node


def order_select_request(patient: RealPatient, templates: Mapping[str, str]) -> dict[str, Any]:
    """The order-select request an EHR sends when the Lemtrada first course is selected."""
    orders = _substitute(
        json.loads(ORDER_FILE.read_text(encoding="utf-8")),
        patient.t0,
        f"Patient/{patient.patient_id}",
    )
    return {
        "hook": "order-select",
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, f"real-patient:{patient.key}")),
        "context": {
            "userId": USER_ID,
            "patientId": patient.patient_id,
            "selections": [f"{o['resourceType']}/{o['id']}" for o in orders],
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": o} for o in orders],
            },
        },
        "prefetch": answer_prefetch(templates, patient.patient_id, patient.resources),
    }


def discovery_templates(discovery: dict[str, Any]) -> dict[str, str]:
    """The order-select service's prefetch templates from a discovery answer."""
    service = next(s for s in discovery["services"] if s["id"] == SERVICE_PATH.rsplit("/", 1)[1])
    templates: dict[str, str] = service["prefetch"]
    return templates
