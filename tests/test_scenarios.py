"""End-to-end scenarios: each request in fhir_fixtures/requests/ gets exactly the expected cards.

The requests are composed by fhir_fixtures/build_requests.py from fhir_fixtures/scenarios.json
(Synthea R4 base bundles + overlays and draft orders written by this project). Every scenario uses
T0 = 2026-12-07 (planned first infusion) and carries no fhirServer, so the service can only use the
prefetch it is given.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
import re

import pytest
from fixture_requests import fixture_request as _request

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fhir_fixtures"

SERVICE_URL = {
    "order-select": "/cds-services/lemtrada-order-select",
    "order-sign": "/cds-services/lemtrada-order-sign",
}

# Topic codes (card["source"]["topic"]["code"]) and their card["indicator"].
SUMMARY = "eligibility-summary"
LIVE = "live-vaccine-gap"
VZV = "vzv-immunity"
DMT = "prior-dmt"
TB = "tb-screening"
HIV = "hiv-screening"
HCV = "hcv-screening"
# Label topics (issue #4) that change existing rows.
AGE = "age"
NON_LIVE = "non-live-vaccine-gap"
PREGNANCY = "pregnancy"
INDICATION = "indication"
BASELINE = "baseline-labs"
HBV = "hbv-screening"

SEVERITY = {"info": 0, "warning": 1, "critical": 2}
NOTHING_KNOWN = {
    VZV: "warning", DMT: "warning", TB: "warning", HIV: "warning", HCV: "warning",
    PREGNANCY: "warning", INDICATION: "warning", BASELINE: "warning", HBV: "warning",
    SUMMARY: "warning",
}

# scenario name -> EXACT {topic code: indicator} of the response. The summary's indicator is the
# worst of the other cards ("info" when there are none); orders for other drugs get no cards at all.
SCENARIOS = [
    # Complete evidence: woman of reproductive age, RRMS, 2 prior DMTs, VZV IgG+, IGRA/HIV/HCV/HBV
    # negative, baseline labs within 30 days, negative hCG within 7 days.
    ("eligible_patient_at_order_select", {SUMMARY: "info"}),
    ("eligible_patient_at_order_sign", {SUMMARY: "info"}),
    ("eligible_adult_man_needs_no_pregnancy_test", {SUMMARY: "info"}),
    ("eligible_man_with_large_record_at_order_sign", {SUMMARY: "info"}),
    ("lemtrada_by_medication_reference", {SUMMARY: "info"}),
    # Vaccines within 6 weeks (42 days) of T0.
    ("live_vaccine_three_weeks_before_start", {LIVE: "critical", SUMMARY: "critical"}),
    ("live_vaccine_exactly_42_days_before_start", {SUMMARY: "info"}),
    # Shingrix is not live (no hard stop), but any vaccine within 6 weeks is a warning.
    ("shingrix_within_six_weeks_is_not_live", {NON_LIVE: "warning", SUMMARY: "warning"}),
    ("ambiguous_zoster_vaccine_within_six_weeks", {LIVE: "warning", SUMMARY: "warning"}),
    ("live_vaccine_not_done_is_ignored", {SUMMARY: "info"}),
    # Varicella immunity.
    ("vzv_antibody_negative", {VZV: "warning", SUMMARY: "warning"}),
    ("vzv_status_unknown", {VZV: "warning", SUMMARY: "warning"}),
    ("varicella_history_counts_as_immunity", {SUMMARY: "info"}),
    ("shingrix_is_not_evidence_of_varicella_immunity", {VZV: "warning", SUMMARY: "warning"}),
    # A 7-year-old: VZV immunity is met, but Lemtrada is not recommended under 17.
    ("child_varicella_vaccine_counts_as_vzv_immunity", {AGE: "warning", SUMMARY: "warning"}),
    # Prior disease-modifying therapies.
    ("only_one_prior_dmt", {DMT: "warning", SUMMARY: "warning"}),
    ("two_dmts_named_only_in_text", {SUMMARY: "info"}),
    # HIV.
    ("hiv_test_positive", {HIV: "critical", SUMMARY: "critical"}),
    ("hiv_viral_load_detected_despite_negative_screen", {HIV: "critical", SUMMARY: "critical"}),
    ("unreadable_hiv_result", {HIV: "warning", SUMMARY: "warning"}),
    ("hiv_result_by_value_string", {SUMMARY: "info"}),
    # Tuberculosis.
    ("tb_screening_missing", {TB: "warning", SUMMARY: "warning"}),
    ("tb_igra_positive", {TB: "critical", SUMMARY: "critical"}),
    ("tb_result_older_than_twelve_months", {TB: "warning", SUMMARY: "warning"}),
    ("newer_negative_tb_supersedes_older_positive", {SUMMARY: "info"}),
    # Hepatitis C.
    ("hcv_antibody_positive_without_rna", {HCV: "warning", SUMMARY: "warning"}),
    ("hcv_rna_detected", {HCV: "critical", SUMMARY: "critical"}),
    ("hcv_antibody_positive_with_rna_not_detected", {SUMMARY: "info"}),
    # Prefetch missing: everything unknown, but no evidence of a live vaccine either.
    ("prefetch_values_null", NOTHING_KNOWN),
    # Not about alemtuzumab: no cards even though an MMR was given 7 days before T0.
    ("order_for_another_drug", {}),
    ("alemtuzumab_drafted_but_not_selected", {}),
]

# scenario name -> HTTP status of a request the service must refuse.
# CDS Hooks 2.0 (#prefetch-template): without the needed prefetch keys and without a FHIR server,
# the service SHALL answer 412 Precondition Failed.
REFUSED_SCENARIOS = [
    ("prefetch_keys_omitted", 412),
]

# Resources that are deliberately NOT valid R4/R4B, keyed by (resourceType, id), with the reason.
# fhir.resources does not enforce the 64-character id limit, so the Epic-style Medication
# (120-character id, otherwise valid) parses and is not listed; the Epic-style MedicationRequest
# fails on its missing intent.
DELIBERATELY_INVALID = {
    ("MedicationRequest",
     "eRx.Lm7qWc2TbZ9vKd3sPf8nHj1yXg4uNa6oEi0rBt5-Fw3CzQh8VkYp2JsMd7GxLe.ORDER-0000000001"):
        "Epic-style draft order without intent (its 83-character id also breaks R4's limit of 64)",
    ("Observation", "hiv-ag-ab-unreadable"):
        "unreadable HIV result: status is the number 12345 and valueCodeableConcept a bare string",
}
# draftOrders Bundles sent without Bundle.type (required in R4) on purpose.
UNTYPED_DRAFT_ORDERS = {"lemtrada_by_medication_reference"}


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_requests", FIXTURES / "build_requests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scenario_names() -> list[str]:
    scenarios = json.loads((FIXTURES / "scenarios.json").read_text(encoding="utf-8"))
    return [s["name"] for s in scenarios]


@pytest.fixture(scope="module")
def client():
    """Flask test client of the CDS service."""
    from cds_service.app import create_app

    app = create_app(testing=True)
    return app.test_client()


@pytest.mark.parametrize(("name", "expected"), SCENARIOS, ids=[name for name, _ in SCENARIOS])
def test_scenario_returns_expected_cards(client, name, expected):
    """The service answers the committed request with exactly the expected topic/indicator cards."""
    request = _request(name)
    response = client.post(SERVICE_URL[request["hook"]], json=request)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    body = response.get_json()
    if not expected:
        assert body == {"cards": []}
        return
    cards = body["cards"]
    topics = [card["source"]["topic"]["code"] for card in cards]
    assert len(topics) == len(set(topics)), f"more than one card per topic: {topics}"
    got = {card["source"]["topic"]["code"]: card["indicator"] for card in cards}
    assert got == expected


@pytest.mark.parametrize(
    ("name", "status"), REFUSED_SCENARIOS, ids=[n for n, _ in REFUSED_SCENARIOS]
)
def test_refused_scenario_returns_error_status(client, name, status):
    """The service refuses the committed request with the expected HTTP status, not cards."""
    request = _request(name)
    response = client.post(SERVICE_URL[request["hook"]], json=request)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]


def test_table_covers_every_scenario():
    """SCENARIOS plus REFUSED_SCENARIOS name exactly the scenarios of scenarios.json."""
    table = [name for name, _ in SCENARIOS + REFUSED_SCENARIOS]
    assert len(table) == len(set(table))
    assert sorted(table) == sorted(_scenario_names())


@pytest.mark.parametrize(("name", "expected"), SCENARIOS, ids=[name for name, _ in SCENARIOS])
def test_expected_summary_is_the_worst_indicator(name, expected):
    """In the table, the summary's indicator is the worst of the other cards (info when none)."""
    if not expected:
        return
    others = [v for k, v in expected.items() if k != SUMMARY]
    worst = max(others, key=SEVERITY.__getitem__, default="info")
    assert expected[SUMMARY] == worst


def test_committed_requests_are_up_to_date():
    """fhir_fixtures/requests/ equals what build_requests.py produces from scenarios.json."""
    assert _load_builder().check() == []


def test_base_files_are_unchanged_copies():
    """Every file in fhir_fixtures/base/ has the SHA-256 recorded in fhir_fixtures/SOURCES.md."""
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    pairs = re.findall(r"^([0-9a-f]{64})  (base/\S+)$", sources, re.M)
    recorded = {path: digest for digest, path in pairs}
    actual = {f"base/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted((FIXTURES / "base").iterdir())}
    assert actual == recorded


def _resources_of(request: dict):
    """Yield (where, resource) for every FHIR resource carried by a request."""
    prefetch = request["prefetch"]
    for key, value in prefetch.items():
        if value is None:
            continue
        if value.get("resourceType") == "Bundle":
            yield f"prefetch.{key}", {k: v for k, v in value.items() if k != "entry"}
            for i, entry in enumerate(value.get("entry", [])):
                yield f"prefetch.{key}.entry[{i}]", entry["resource"]
        else:
            yield f"prefetch.{key}", value
    draft = request["context"]["draftOrders"]
    yield "context.draftOrders", {k: v for k, v in draft.items() if k != "entry"}
    for i, entry in enumerate(draft.get("entry", [])):
        yield f"context.draftOrders.entry[{i}]", entry["resource"]


def test_every_fixture_resource_parses_with_r4b_models():
    """Every resource in every request validates with the R4B models, except the listed ones."""
    from fhir.resources.R4B import get_fhir_model_class

    failures, unexpectedly_valid, seen_exceptions = [], [], set()
    for name in _scenario_names():
        for where, resource in _resources_of(_request(name)):
            key = (resource["resourceType"], resource.get("id"))
            expected_invalid = key in DELIBERATELY_INVALID or (
                where == "context.draftOrders" and name in UNTYPED_DRAFT_ORDERS)
            try:
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            except Exception as exc:  # pydantic.ValidationError and friends
                if expected_invalid:
                    seen_exceptions.add(key if key in DELIBERATELY_INVALID else (name, where))
                else:
                    failures.append(f"{name} {where} {key[0]}/{key[1]}: {str(exc)[:300]}")
            else:
                if expected_invalid:
                    unexpectedly_valid.append(f"{name} {where} {key[0]}/{key[1]}")
    assert not failures, "\n".join(failures)
    assert not unexpectedly_valid, f"deliberately invalid resources validate: {unexpectedly_valid}"
    unused = set(DELIBERATELY_INVALID) - seen_exceptions
    assert not unused, f"listed exceptions no scenario uses any more: {unused}"
