"""Property-based tests (hypothesis) over generated patients and alemtuzumab orders (issue 6).

Requests come from tests/patient_strategies.py: a committed fixture (the eligible woman at
order-select or order-sign) with its decisive evidence removed, a generated patient and order,
and generated evidence built from the shipped value sets. Properties:

1. removing evidence that supports eligibility never makes a check better, nor any card's indicator
   (nor the summary's) lower;
2. adding resources that bear on no check never changes the response body;
3. reordering resources (within bundles, and the prefetch keys) or serving them page by page from
   a FHIR server never changes the cards; which resource carries which id never changes a verdict;
4. the same request always gives byte-identical HTTP responses (same app, after clearing the R4B
   validation cache, and on a fresh app).

Counts are fixed (GENERATED_CASES) and `derandomize=True`, so CI runs the same cases every time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Any

import orjson
import pytest
from fhir_stub_server import FhirStub
from fixture_requests import SERVICE_URL
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from patient_strategies import PATIENT_ID, TODAY, Case, Item, cases, noise_items

from cds_service.app import create_app
from cds_service.domain.findings import Finding, Status
from cds_service.engine import Answer, answer
from cds_service.hook_request import read_hook_request
from cds_service.models import clear_validation_cache
from cds_service.services import PREFETCH_TYPES, SERVICES_BY_ID, prefetch_templates

# Slow: hypothesis generates hundreds of patients per property;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

GENERATED_CASES: dict[str, int] = {
    "removing supporting evidence never improves a check or lowers an indicator": 300,
    "adding resources that bear on no check never changes the response": 300,
    "reordering resources within bundles never changes the response": 300,
    "renaming resources never changes a verdict": 300,
    "paging a searchset on the FHIR server gives the same cards as prefetch": 50,
    "the same request always gives byte-identical responses": 100,
}
"""Number of generated cases per property (quoted in the issue's note)."""

SUMMARY = "eligibility-summary"
SEVERITY = {"info": 0, "warning": 1, "critical": 2}
STATUS_RANK = {Status.MET: 0, Status.UNKNOWN: 1, Status.NOT_MET: 1}
"""Met is the only all-clear; unknown and not met are both 'not cleared' (neither is better)."""


def _settings(name: str) -> Callable[[Any], Any]:
    return settings(
        max_examples=GENERATED_CASES[name],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def evaluate(request_json: dict[str, Any]) -> Answer:
    """Answer a hook request in-process, with the fixed clock of the fixtures."""
    request = read_hook_request(request_json, request_json["hook"])
    return answer(request, SERVICES_BY_ID[f"lemtrada-{request.hook}"], TODAY)


def indicators(body: dict[str, Any]) -> dict[str, str]:
    """Card indicator by topic code (a topic without a card is an all-clear, 'info')."""
    return {card["source"]["topic"]["code"]: card["indicator"] for card in body["cards"]}


def by_topic(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.topic: finding for finding in findings}


@cache
def shared_client() -> FlaskClient:
    """One unauthenticated app for the whole module (in-memory SQLite, no fhirServer used)."""
    return create_app(testing=True).test_client()


def post(client: FlaskClient, request_json: dict[str, Any]) -> bytes:
    """POST the request's exact bytes; the response body bytes (status must be 200)."""
    response = client.post(
        SERVICE_URL[request_json["hook"]],
        data=orjson.dumps(request_json),
        content_type="application/json",
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    return response.get_data()


# -- 1. removing supporting evidence ---------------------------------------------------------


@_settings("removing supporting evidence never improves a check or lowers an indicator")
@given(case=cases(min_supporting=1), data=st.data())
def test_removing_supporting_evidence_never_improves_a_check(
    case: Case, data: st.DataObject
) -> None:
    """Dropping negative tests, immunity evidence or prior DMTs never clears a check or an alert."""
    removed = data.draw(st.sets(st.sampled_from(case.supporting), min_size=1), label="removed")
    note(f"items: {[item.what for item in case.items]}")
    note(f"removed: {[case.items[i].what for i in sorted(removed)]}")
    kept = tuple(item for i, item in enumerate(case.items) if i not in removed)
    before, after = evaluate(case.request()), evaluate(case.request(kept))
    old, new = by_topic(before.findings), by_topic(after.findings)
    assert old.keys() == new.keys()
    for topic, finding in old.items():
        assert STATUS_RANK[new[topic].status] >= STATUS_RANK[finding.status], (
            f"{topic}: {finding.status.value} -> {new[topic].status.value}"
        )
        assert new[topic].severity >= finding.severity, (
            f"{topic}: {finding.severity.indicator} -> {new[topic].severity.indicator}"
        )
    old_cards, new_cards = indicators(before.body), indicators(after.body)
    for topic, indicator in old_cards.items():
        assert SEVERITY[new_cards.get(topic, "info")] >= SEVERITY[indicator], (
            f"card {topic}: {indicator} -> {new_cards.get(topic, 'no card')}"
        )
    assert SEVERITY[new_cards[SUMMARY]] >= SEVERITY[old_cards[SUMMARY]]


# -- 2. irrelevant resources -----------------------------------------------------------------


@_settings("adding resources that bear on no check never changes the response")
@given(case=cases(), noise=noise_items())
def test_resources_that_bear_on_no_check_never_change_the_response(case: Case, noise: Any) -> None:
    """Unrelated codes, other patients' and entered-in-error records leave the body unchanged."""
    note(f"items: {[item.what for item in case.items]}")
    note(f"noise: {[item.what for item in noise]}")
    assert evaluate(case.request(noise=noise)).body == evaluate(case.request()).body


# -- 3. order and pagination -----------------------------------------------------------------


def _reordered(request_json: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The same request with every bundle's entries and the prefetch keys permuted."""
    out = dict(request_json)
    keys = data.draw(st.permutations(sorted(request_json["prefetch"])), label="key order")
    prefetch: dict[str, Any] = {}
    for key in keys:
        value = request_json["prefetch"][key]
        if value.get("resourceType") == "Bundle":
            value = dict(value, entry=data.draw(st.permutations(value["entry"]), label=key))
        prefetch[key] = value
    out["prefetch"] = prefetch
    return out


@_settings("reordering resources within bundles never changes the response")
@given(case=cases(), noise=noise_items(min_size=0, max_size=3), data=st.data())
def test_reordering_resources_never_changes_the_response(
    case: Case, noise: Any, data: st.DataObject
) -> None:
    """Any order of entries in the prefetch bundles (and of the keys) gives the same body."""
    note(f"items: {[item.what for item in case.items]}")
    request_json = case.request(noise=noise)
    assert evaluate(_reordered(request_json, data)).body == evaluate(request_json).body


@_settings("renaming resources never changes a verdict")
@given(case=cases(), data=st.data())
def test_renaming_resources_never_changes_a_verdict(case: Case, data: st.DataObject) -> None:
    """Which generated resource carries which id never changes a check's status or indicator."""
    note(f"items: {[item.what for item in case.items]}")
    ids = data.draw(st.permutations([item.resource["id"] for item in case.items]), label="ids")
    renamed = tuple(
        replace(item, resource=dict(item.resource, id=new_id))
        for item, new_id in zip(case.items, ids, strict=True)
    )
    before, after = evaluate(case.request()), evaluate(case.request(renamed))
    verdicts = {f.topic: (f.status, f.severity) for f in before.findings}
    assert {f.topic: (f.status, f.severity) for f in after.findings} == verdicts
    assert indicators(after.body) == indicators(before.body)


def _paged_request(
    request_json: dict[str, Any], stub: FhirStub, modes: dict[str, str], page_size: int
) -> dict[str, Any]:
    """The request with each prefetch key kept, dropped (fetched) or cut to its first page."""
    prefetch: dict[str, Any] = {}
    for key, mode in modes.items():
        if mode == "prefetch":
            prefetch[key] = request_json["prefetch"][key]
        elif mode == "first page":
            query = prefetch_templates()[key].split("?", 1)[1]
            params = dict(part.split("=", 1) for part in query.split("&"))
            params.pop("patient")
            prefetch[key] = stub.first_page(PREFETCH_TYPES[key], PATIENT_ID, page_size, **params)
    out = {k: v for k, v in request_json.items() if k != "prefetch"}
    out.update(
        prefetch=prefetch,
        fhirServer=stub.base_url,
        fhirAuthorization={
            "access_token": stub.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        },
    )
    return out


def test_fhir_server_pages_give_the_same_cards_as_prefetch() -> None:
    """Data paged by a real FHIR server (next links) or prefetched gives the same cards."""
    with FhirStub({"prefetch": {}}) as stub:
        # Pages of one result hold the patient's 33 laboratory results in 33 pages: above the
        # default cap of 20, which is not what this property is about (test_prefetch.py is).
        app: Flask = create_app(
            testing=True,
            fhir_server_allowlist=(stub.base_url,),
            http_allowed_hosts=("127.0.0.1",),
            fhir_deadline_seconds=10.0,
            fhir_page_cap=100,
        )
        client = app.test_client()
        mode = st.sampled_from(["prefetch", "absent", "first page"])
        bundle_keys = sorted(k for k in PREFETCH_TYPES if k != "patient")

        @_settings("paging a searchset on the FHIR server gives the same cards as prefetch")
        @given(
            case=cases(),
            noise=noise_items(min_size=0, max_size=3),
            page_size=st.integers(1, 7),
            modes=st.fixed_dictionaries(
                {
                    "patient": st.sampled_from(["prefetch", "absent"]),
                    **{k: mode for k in bundle_keys},
                }
            ),
        )
        def check(case: Case, noise: Any, page_size: int, modes: dict[str, str]) -> None:
            note(f"items: {[item.what for item in case.items]}; modes {modes}")
            full = case.request(noise=noise)
            stub.by_type = FhirStub(full).by_type  # what the server holds: this request's data
            stub.page_size = page_size
            expected = post(client, full)
            paged = post(client, _paged_request(full, stub, modes, page_size))
            assert orjson.loads(paged) == orjson.loads(expected)

        try:
            check()
            assert any("_offset" in r.query for r in stub.requests), "no case was paged"
        finally:
            app.extensions["cds_fetcher"].session.close()


# -- 4. byte identity ------------------------------------------------------------------------


@_settings("the same request always gives byte-identical responses")
@given(case=cases(), noise=noise_items(min_size=0, max_size=3))
def test_same_request_gives_byte_identical_responses(case: Case, noise: Any) -> None:
    """Twice on one app, after clearing the validation cache, and on a fresh app: same bytes."""
    request_json = case.request(noise=noise)
    client = shared_client()
    first = post(client, request_json)
    assert post(client, copy.deepcopy(request_json)) == first
    clear_validation_cache()
    assert post(client, request_json) == first
    fresh = create_app(testing=True)
    assert post(fresh.test_client(), request_json) == first


# -- regressions the properties found ------------------------------------------------------


def _same_day(rid: str, code: tuple[str, str], kind: str, meaning: str = "") -> Item:
    """A vaccination or lab result of this patient dated 3 days before T0."""
    if kind == "Immunization":
        resource: dict[str, Any] = {
            "resourceType": "Immunization",
            "id": rid,
            "status": "completed",
            "vaccineCode": {"coding": [{"system": code[0], "code": code[1]}]},
            "patient": {"reference": f"Patient/{PATIENT_ID}"},
            "occurrenceDateTime": "2026-12-04",
            "primarySource": True,
        }
        return Item("immunizations", resource, False, rid)
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": code[0], "code": code[1]}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": "2026-12-04",
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": meaning}]}],
    }
    return Item("observations", resource, False, rid)


INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DOUBTFUL_ZOSTER = ("http://hl7.org/fhir/sid/cvx", "129")
HCG_URINE = ("http://loinc.org", "2106-3")
SAME_DAY_CASES = [
    (
        "two doubtful vaccines on one day get the same card whichever the EHR sends first",
        (
            _same_day("vaccine-a", DOUBTFUL_ZOSTER, "Immunization"),
            _same_day("vaccine-b", DOUBTFUL_ZOSTER, "Immunization"),
        ),
        "live-vaccine-gap",
        Status.UNKNOWN,
    ),
    (
        "a same-day negative and indeterminate hCG is no all-clear, negative sent first",
        (
            _same_day("hcg-a", HCG_URINE, "Observation", "NEG"),
            _same_day("hcg-b", HCG_URINE, "Observation", "IND"),
        ),
        "pregnancy",
        Status.UNKNOWN,
    ),
    (
        "a same-day negative and indeterminate hCG is no all-clear, indeterminate sent first",
        (
            _same_day("hcg-a", HCG_URINE, "Observation", "IND"),
            _same_day("hcg-b", HCG_URINE, "Observation", "NEG"),
        ),
        "pregnancy",
        Status.UNKNOWN,
    ),
]


@pytest.mark.parametrize(
    ("case", "items", "topic", "status"), SAME_DAY_CASES, ids=[c for c, *_ in SAME_DAY_CASES]
)
def test_same_day_records_give_one_answer_in_any_order(
    case: str, items: tuple[Item, ...], topic: str, status: Status
) -> None:
    """Same-day records: the expected status, and the same body whichever comes first."""
    generated = Case("order-sign", "female", "1986-11-28", (), items)
    forward = evaluate(generated.request())
    backward = evaluate(generated.request(tuple(reversed(items))))
    assert by_topic(forward.findings)[topic].status is status
    assert backward.body == forward.body
