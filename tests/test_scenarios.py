"""The clinical table: each request in fhir_fixtures/requests/ gets exactly the expected checklist.

fhir_fixtures/scenarios.json is the one table of scenarios: a name that reads as a clinical
sentence, a description, the expected checklist under each order hook (`expected_cards`: hook ->
{check topic: indicator} of every check not met or unknown, plus `eligibility-summary`: the
summary card's indicator; {} means no cards at all) or the status of a refusal (`refused_with`),
and the inputs that fhir_fixtures/build_requests.py composes into the request (Synthea R4 base
bundles + overlays and draft orders written by this project). Every scenario uses T0 = 2026-12-07
(planned first infusion) and carries no fhirServer, so the service can only use the prefetch it
is given. Each request is sent as written and under the other order hook
(tests/golden_responses.py:under_hook).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
import re
from typing import Any

import pytest
from fixture_requests import fixture_request as _request
from golden_responses import HOOKS

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fhir_fixtures"
SCENARIO_TABLE = json.loads((FIXTURES / "scenarios.json").read_text(encoding="utf-8"))
SUMMARY = "eligibility-summary"

# (scenario, hook, EXACT {check topic: indicator} of the checks not met, plus the summary's
# indicator); {} means no cards at all.
CARD_CASES = [
    (s["name"], hook, s["expected_cards"][hook])
    for s in SCENARIO_TABLE
    if "expected_cards" in s
    for hook in HOOKS
]
# (scenario, hook, HTTP status of a request the service must refuse).
# CDS Hooks 2.0 (#prefetch-template): without the needed prefetch keys and without a FHIR server,
# the service SHALL answer 412 Precondition Failed.
REFUSED_CASES = [
    (s["name"], hook, s["refused_with"])
    for s in SCENARIO_TABLE
    if "refused_with" in s
    for hook in HOOKS
]
SEVERITY = {"info": 0, "warning": 1, "critical": 2}

# Resources that are deliberately NOT valid R4/R4B, keyed by (resourceType, id), with the reason.
# fhir.resources does not enforce the 64-character id limit, so the Epic-style Medication
# (120-character id, otherwise valid) parses and is not listed; the Epic-style MedicationRequest
# fails on its missing intent.
DELIBERATELY_INVALID = {
    (
        "MedicationRequest",
        "eRx.Lm7qWc2TbZ9vKd3sPf8nHj1yXg4uNa6oEi0rBt5-Fw3CzQh8VkYp2JsMd7GxLe.ORDER-0000000001",
    ): "Epic-style draft order without intent (its 83-character id also breaks R4's limit of 64)",
    (
        "Observation",
        "hiv-ag-ab-unreadable",
    ): "unreadable HIV result: status is the number 12345 and valueCodeableConcept a bare string",
}
# draftOrders Bundles sent without Bundle.type (required in R4) on purpose.
UNTYPED_DRAFT_ORDERS = {"lemtrada_by_medication_reference"}


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_requests", FIXTURES / "build_requests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scenario_names() -> list[str]:
    return [s["name"] for s in SCENARIO_TABLE]


def _answer(frozen_answer: Any, name: str, hook: str) -> tuple[int, Any]:
    """(status, body) of the request sent under `hook` (tests/golden_responses.py:under_hook), as
    the service answers it on the golden files' date (tests/conftest.py:frozen_answer)."""
    answer = json.loads(frozen_answer(name, hook))
    return answer["status"], answer["body"]


CHECKLIST = "org.example.cds-service.checklist"
PROBLEM_STATUSES = {"not-met", "unknown"}
QUIET_STATUSES = {"met", "not-applicable", "pending"}
GROUPED_TOPICS = {"pretreatment-workup", "review-before-start", "infusion-day-orders"}
MAX_CARDS_BESIDES_CRITICAL = {"order-select": 3, "order-sign": 4}


def _checklist(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checks of the summary card's checklist extension."""
    (summary,) = [c for c in cards if c["source"]["topic"]["code"] == SUMMARY]
    extension = summary["extension"][CHECKLIST]
    assert extension["version"] == 1
    return extension["checks"]


@pytest.mark.parametrize(
    ("name", "hook", "expected"),
    CARD_CASES,
    ids=[f"{name} at {hook}" for name, hook, _ in CARD_CASES],
)
def test_scenario_returns_expected_cards(frozen_answer, name, hook, expected):
    """The clinical table is written against the checklist: each check the row names is not met
    or unknown with the row's indicator, every other check is met, not applicable or pending
    with no indicator, and the summary card carries the row's eligibility-summary indicator."""
    status, body = _answer(frozen_answer, name, hook)
    assert status == 200, body
    if not expected:
        assert body == {"cards": []}
        return
    cards = body["cards"]
    checks = _checklist(cards)
    got = {
        check["topic"]: check["indicator"]
        for check in checks
        if check["status"] in PROBLEM_STATUSES
    }
    assert got == {t: i for t, i in expected.items() if t != SUMMARY}
    for check in checks:
        if check["topic"] not in got:
            assert check["status"] in QUIET_STATUSES and "indicator" not in check, check
    indicators = {card["source"]["topic"]["code"]: card["indicator"] for card in cards}
    assert indicators[SUMMARY] == expected[SUMMARY]


@pytest.mark.parametrize(
    ("name", "hook", "expected"),
    [case for case in CARD_CASES if case[2]],
    ids=[f"{name} at {hook}" for name, hook, expected in CARD_CASES if expected],
)
def test_scenario_gets_one_grouped_card_set(frozen_answer, name, hook, expected):
    """Critical checks keep their own card; every other problem is on at most three grouped
    cards (the infusion-day card only at order-sign) beside the summary; a fully eligible
    patient gets the summary alone, as an info card."""
    cards = _answer(frozen_answer, name, hook)[1]["cards"]
    topics = [card["source"]["topic"]["code"] for card in cards]
    critical = {t for t, i in expected.items() if i == "critical" and t != SUMMARY}
    assert critical <= set(topics)
    others = [t for t in topics if t not in critical]
    assert len(others) <= MAX_CARDS_BESIDES_CRITICAL[hook], topics
    assert set(others) <= GROUPED_TOPICS | {SUMMARY}, topics
    if hook == "order-select":
        assert "infusion-day-orders" not in topics
    warnings = [t for t, i in expected.items() if i == "warning" and t != SUMMARY]
    assert bool(warnings) == bool(set(others) & GROUPED_TOPICS), topics
    if expected == {SUMMARY: "info"}:
        assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [
            (SUMMARY, "info")
        ]


@pytest.mark.parametrize(
    ("name", "hook", "status"),
    REFUSED_CASES,
    ids=[f"{name} at {hook}" for name, hook, _ in REFUSED_CASES],
)
def test_refused_scenario_returns_error_status(frozen_answer, name, hook, status):
    """The service refuses the committed request with the expected HTTP status, not cards."""
    got, body = _answer(frozen_answer, name, hook)
    assert got == status, body
    assert body["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("name", "hook"),
    [(n, h) for n, h, e in CARD_CASES if e],
    ids=[f"{n} at {h}" for n, h, e in CARD_CASES if e],
)
def test_summary_card_carries_the_worst_indicator_of_the_answer(frozen_answer, name, hook):
    """In every answer with cards, the service's summary card carries the worst indicator of the
    other cards it sent ("info" when it sent none), so a clinician reading only the summary is
    not told less than the cards below it say."""
    cards = _answer(frozen_answer, name, hook)[1]["cards"]
    indicators = {card["source"]["topic"]["code"]: card["indicator"] for card in cards}
    others = [indicator for topic, indicator in indicators.items() if topic != SUMMARY]
    assert indicators[SUMMARY] == max(others, key=SEVERITY.__getitem__, default="info")


def test_table_rows_are_well_formed():
    """Each row expects cards under both hooks or a refusal, and uses only known indicators."""
    for row in SCENARIO_TABLE:
        assert ("expected_cards" in row) != ("refused_with" in row), row["name"]
        if "expected_cards" in row:
            assert sorted(row["expected_cards"]) == sorted(HOOKS), row["name"]
            for cards in row["expected_cards"].values():
                assert set(cards.values()) <= set(SEVERITY), row["name"]


def test_committed_requests_are_up_to_date():
    """fhir_fixtures/requests/ equals what build_requests.py produces from scenarios.json."""
    assert _load_builder().check() == []


def test_base_files_are_unchanged_copies():
    """Every file in fhir_fixtures/base/ has the SHA-256 recorded in fhir_fixtures/SOURCES.md."""
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    pairs = re.findall(r"^([0-9a-f]{64})  (base/\S+)$", sources, re.M)
    recorded = {path: digest for digest, path in pairs}
    actual = {
        f"base/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((FIXTURES / "base").iterdir())
    }
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
                where == "context.draftOrders" and name in UNTYPED_DRAFT_ORDERS
            )
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
