"""Every real-data patient through the service, compared with a reviewed expectation file.

Each externally authored patient (tests/real_patients.py: the 10 Synthea R4 bundles, the 13
patients of the Synthea bulk NDJSON, the 3 US Core example patients) is sent as an EHR would:
an order-select for a Lemtrada first course starting on the dataset's T0, with the prefetch the
service asks for at discovery answered from the patient's own records. Each check's status and
indicator is compared with tests/data/real_patients_expected.tsv, written by reading the records
(tests/real_patient_facts.py) against ISSUE-13's rules; a failure prints every differing line.
"""

from __future__ import annotations

import csv
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from real_patients import (
    FIXTURES,
    REAL,
    SERVICE_PATH,
    RealPatient,
    UnsupportedQuery,
    discovery_templates,
    evaluate,
    order_select_request,
    patients,
)

from cds_service.domain.rules import RULES

EXPECTED_FILE = Path(__file__).resolve().parent / "data" / "real_patients_expected.tsv"
CHECKLIST_EXT = "org.example.cds-service.checklist"
SUMMARY_TOPIC = "eligibility-summary"
STATUSES = {"met", "not-met", "unknown", "not-applicable", "pending"}
INDICATORS = {"-", "info", "warning", "critical"}
NEW_TOPICS = {"deceased", "unassessed-conditions"}
"""Checks issue 13 adds (w13-unrecognised), expected on every patient."""
PATIENTS = patients()


@cache
def expectations() -> dict[str, dict[str, tuple[str, str, str]]]:
    """patient key -> topic -> (status, indicator, reason), from the reviewed file."""
    out: dict[str, dict[str, tuple[str, str, str]]] = {}
    with EXPECTED_FILE.open(encoding="utf-8", newline="") as handle:
        lines = (line for line in handle if line.strip() and not line.startswith("#"))
        for row in csv.reader(lines, delimiter="\t"):
            patient, topic, status, indicator, reason = row
            out.setdefault(patient, {})[topic] = (status, indicator, reason)
    return out


def order_select_topics() -> set[str]:
    return {rule.topic for rule in RULES if "order-select" in rule.hooks} | NEW_TOPICS


def check_statuses(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """topic -> (status, indicator) of every check, from the summary card's machine-readable
    checklist (the one place that reads it)."""
    summary = next(c for c in body["cards"] if c["source"]["topic"]["code"] == SUMMARY_TOPIC)
    return {
        check["topic"]: (check["status"], check.get("indicator") or "-")
        for check in summary["extension"][CHECKLIST_EXT]["checks"]
    }


@pytest.fixture(scope="module")
def templates(module_client: FlaskClient) -> dict[str, str]:
    """The prefetch templates the service publishes at discovery."""
    return discovery_templates(module_client.get("/cds-services").get_json())


def test_real_data_copies_are_the_recorded_ones() -> None:
    """Every file under fhir_fixtures/real/ has the SHA-256 recorded in fhir_fixtures/SOURCES.md."""
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    recorded = {p: d for d, p in re.findall(r"^([0-9a-f]{64})  (real/\S+)$", sources, re.M)}
    present = {str(path.relative_to(FIXTURES)) for path in REAL.rglob("*") if path.is_file()}
    assert sorted(recorded) == sorted(present)
    for path, digest in recorded.items():
        assert hashlib.sha256((FIXTURES / path).read_bytes()).hexdigest() == digest, path


def test_expectation_file_has_one_line_per_check_per_patient() -> None:
    """The reviewed file covers every patient and every order-select check, and nothing else."""
    expected = expectations()
    assert sorted(expected) == sorted(p.key for p in PATIENTS)
    for key, lines in expected.items():
        assert set(lines) == order_select_topics(), key
        for status, indicator, reason in lines.values():
            assert status in STATUSES and indicator in INDICATORS and reason, key
            assert (indicator == "-") == (status in ("met", "not-applicable", "pending")), key


@pytest.mark.parametrize("patient", PATIENTS, ids=[f"{p.key} prefetch" for p in PATIENTS])
def test_every_prefetch_template_is_answered_from_the_records(
    templates: dict[str, str], patient: RealPatient
) -> None:
    """Each template the service publishes has a shape the evaluator understands, and the
    patient's Patient resource answers the patient key."""
    try:
        request = order_select_request(patient, templates)
    except UnsupportedQuery as exc:  # pragma: no cover - fails with the query shown
        pytest.fail(f"prefetch template not understood: {exc}")
    assert set(request["prefetch"]) == set(templates)
    assert request["prefetch"]["patient"]["id"] == patient.patient_id


def test_the_evaluator_refuses_a_query_shape_it_does_not_know() -> None:
    """A template with another search parameter is not silently answered with everything."""
    patient = PATIENTS[0]
    with pytest.raises(UnsupportedQuery):
        evaluate(f"Observation?patient={patient.patient_id}&date=ge2020", patient.patient_id, ())


def _diff(key: str, got: dict[str, tuple[str, str]]) -> list[str]:
    expected = expectations()[key]
    out = []
    for topic in sorted(set(expected) | set(got)):
        want = expected.get(topic)
        have = got.get(topic)
        if want is None or have is None or (want[0], want[1]) != have:
            want_text = f"{want[0]}/{want[1]}" if want else "(no line)"
            have_text = f"{have[0]}/{have[1]}" if have else "(no check)"
            reason = want[2] if want else ""
            out.append(f"{key:32} {topic:30} expected {want_text:24} got {have_text:24} {reason}")
    return out


@pytest.mark.parametrize("patient", PATIENTS, ids=[p.key for p in PATIENTS])
def test_real_patient_gets_the_reviewed_checklist(
    module_client: FlaskClient, templates: dict[str, str], patient: RealPatient
) -> None:
    """The service's checklist for the patient equals the reviewed expectation, line by line."""
    response = module_client.post(SERVICE_PATH, json=order_select_request(patient, templates))
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    differences = _diff(patient.key, check_statuses(response.get_json()))
    if differences:
        header = f"{'patient':32} {'check':30} expected vs got{' ' * 47}reason (expected)"
        pytest.fail("\n".join([f"{len(differences)} lines differ:", header, *differences]), False)
