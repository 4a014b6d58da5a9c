"""Response invariants (CDS Hooks 2.0 card contract) over EVERY response to EVERY request fixture.

Parametrized over fhir_fixtures/requests/*.json and requests/monitoring/*.json (the monitoring
service), so a new fixture is covered without editing this file. Each invariant is a separate
test so a failure names the rule that broke.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import re
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from fixture_requests import MONITORING_TODAY, SERVICE_URL, monitoring_cases
from fixture_requests import fixture_request as _request

from cds_service.models import validation_problem

ROOT = pathlib.Path(__file__).resolve().parents[1]
REQUESTS = ROOT / "fhir_fixtures" / "requests"
FIXTURES = sorted(p.stem for p in REQUESTS.glob("*.json")) + [
    name for name, _ in monitoring_cases()
]
"""The order fixtures and the monitoring service's (patient-view, asked on MONITORING_TODAY)."""
SCENARIO_TABLE = json.loads((ROOT / "fhir_fixtures" / "scenarios.json").read_text(encoding="utf-8"))
REFUSED = {row["name"] for row in SCENARIO_TABLE if "refused_with" in row}
INDICATORS = {"info", "warning", "critical"}
SELECTION_BEHAVIORS = {"at-most-one", "any"}
ACTION_TYPES = {"create", "update", "delete"}
LINK_TYPES = {"absolute", "smart"}


def _post(client: Any, name: str, request: dict[str, Any]) -> Any:
    """Post a fixture to its hook's service; a monitoring fixture on the day it is dated from."""
    day = mock.patch("cds_service.http_api.today", return_value=MONITORING_TODAY)
    with day if name.startswith("monitoring/") else contextlib.nullcontext():
        return client.post(SERVICE_URL[request["hook"]], json=request)


@pytest.fixture(scope="module")
def responses(module_client: Any) -> dict[str, tuple[int, str, bytes]]:
    """(status, mimetype, body bytes) of the first post of every fixture, posted once per module."""
    out = {}
    for name in FIXTURES:
        response = _post(module_client, name, _request(name))
        out[name] = (response.status_code, response.mimetype, response.get_data())
    return out


def _cards(responses: dict[str, tuple[int, str, bytes]], name: str) -> list[dict[str, Any]]:
    status, _, body = responses[name]
    assert status == 200, f"{name} is refused with {status}"
    cards = json.loads(body)["cards"]
    assert isinstance(cards, list)
    return cards


def _suggestions(cards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for card in cards:
        yield from card.get("suggestions", [])


def _actions(cards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for suggestion in _suggestions(cards):
        yield from suggestion.get("actions", [])


def _empty_values(value: Any, path: str) -> Iterator[str]:
    """Paths of every null, "", [] or {} anywhere below value."""
    if value is None or value == "" or value == [] or value == {}:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _empty_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _empty_values(item, f"{path}[{i}]")


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


every_fixture = pytest.mark.parametrize("name", FIXTURES)
# Fixtures the clinical table expects cards for (a refused one, e.g. the 412 without prefetch, has
# none to check; its status is asserted by tests/test_scenarios.py).
ANSWERED = [name for name in FIXTURES if name not in REFUSED]
every_answered_fixture = pytest.mark.parametrize("name", ANSWERED)


@every_fixture
def test_response_is_cards_or_an_operation_outcome(responses, name):
    """Every fixture gets 200 with a cards array, or an error status with an OperationOutcome."""
    status, mimetype, body = responses[name]
    assert mimetype == "application/json"
    doc = json.loads(body)
    if status == 200:
        assert set(doc) <= {"cards", "systemActions"} and isinstance(doc["cards"], list)
    else:
        assert 400 <= status < 500 and doc["resourceType"] == "OperationOutcome"
        assert validation_problem(doc) is None


@every_fixture
def test_no_null_or_empty_field_anywhere(responses, name):
    """No null, empty string, empty array or empty object anywhere except the top-level cards."""
    _, _, body = responses[name]
    doc = json.loads(body)
    empty = [p for p in _empty_values(doc, "$") if p != "$.cards"]
    assert not empty


@every_answered_fixture
def test_summary_is_under_140_characters(responses, name):
    """Every card summary is a non-empty string of fewer than 140 characters."""
    for card in _cards(responses, name):
        assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140


@every_answered_fixture
def test_indicator_is_info_warning_or_critical(responses, name):
    """Every card's indicator is one of the three values the specification allows."""
    for card in _cards(responses, name):
        assert card["indicator"] in INDICATORS


@every_answered_fixture
def test_every_card_and_suggestion_has_a_uuid(responses, name):
    """Every card and every suggestion carries a valid UUID, and no two are the same."""
    cards = _cards(responses, name)
    uuids = [c["uuid"] for c in cards] + [s["uuid"] for s in _suggestions(cards)]
    assert all(_is_uuid(u) for u in uuids), uuids
    assert len(uuids) == len(set(uuids))


@every_answered_fixture
def test_selection_behavior_present_exactly_when_there_are_suggestions(responses, name):
    """selectionBehavior is present (and valid) iff the card has suggestions."""
    for card in _cards(responses, name):
        if card.get("suggestions"):
            assert card["selectionBehavior"] in SELECTION_BEHAVIORS
        else:
            assert "selectionBehavior" not in card


@every_answered_fixture
def test_every_override_reason_is_a_coding_with_display(responses, name):
    """Every override reason has system, code and a human-readable display."""
    for card in _cards(responses, name):
        for reason in card.get("overrideReasons", []):
            assert all(
                isinstance(reason.get(k), str) and reason[k] for k in ("system", "code", "display")
            ), reason


@every_answered_fixture
def test_every_action_has_a_type_and_a_description(responses, name):
    """Every suggestion action has a valid type and a description for the clinician."""
    for action in _actions(_cards(responses, name)):
        assert action["type"] in ACTION_TYPES
        assert isinstance(action["description"], str) and action["description"]
        if action["type"] in ("create", "update"):
            assert isinstance(action["resource"], dict)


@every_answered_fixture
def test_suggested_resources_are_valid_fhir_r4(responses, name):
    """Every resource a suggestion would create validates with the R4B models."""
    for action in _actions(_cards(responses, name)):
        if "resource" in action:
            assert validation_problem(action["resource"]) is None, action["resource"]
        if action["type"] == "create":
            assert "id" not in action["resource"], "a create action must carry a NEW resource"


@every_answered_fixture
def test_every_suggestion_has_a_label_and_an_array_of_actions(responses, name):
    """Each suggestion has a label and a non-empty array of actions; isRecommended is boolean."""
    for suggestion in _suggestions(_cards(responses, name)):
        assert isinstance(suggestion["label"], str) and suggestion["label"]
        assert isinstance(suggestion["actions"], list) and suggestion["actions"]
        assert isinstance(suggestion.get("isRecommended", False), bool)


def _table_rows(detail: str) -> Iterator[list[list[str]]]:
    """Each GitHub-flavored markdown table of a text, as rows of cells (escaped pipes kept)."""
    table: list[list[str]] = []
    for line in detail.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            table.append(cells)
        elif table:
            yield table
            table = []


TABLES = {"eligibility-summary": 1, "monitoring-summary": 2}
"""The markdown tables of the cards that have any: the checklist (and the monitoring dates)."""


@every_answered_fixture
def test_detail_is_markdown_with_well_formed_tables(responses, name):
    """A detail is markdown; its tables have a delimiter row and the same cell count per row."""
    tables = 0
    for card in _cards(responses, name):
        detail = card.get("detail")
        if detail is None:
            continue
        assert isinstance(detail, str) and detail.strip()
        for table in _table_rows(detail):
            tables += 1
            assert all(re.fullmatch(r":?-{3,}:?", cell) for cell in table[1]), table[:2]
            assert {len(row) for row in table} == {len(table[0])}, table
    cards = _cards(responses, name)
    assert tables == sum(TABLES.get(c["source"]["topic"]["code"], 0) for c in cards)


@every_answered_fixture
def test_app_context_only_on_smart_links(responses, name):
    """Links have label, absolute url and type; appContext appears only on smart links."""
    for card in _cards(responses, name):
        for link in card.get("links", []):
            assert link["label"] and link["url"].startswith(("https://", "http://"))
            assert link["type"] in LINK_TYPES
            if "appContext" in link:
                assert link["type"] == "smart"


@every_answered_fixture
def test_every_card_has_a_source_label_and_topic(responses, name):
    """Every card's source has a label and a topic Coding with system and code."""
    for card in _cards(responses, name):
        source = card["source"]
        assert isinstance(source["label"], str) and source["label"]
        topic = source["topic"]
        assert isinstance(topic["system"], str) and topic["system"]
        assert isinstance(topic["code"], str) and topic["code"]
        assert isinstance(topic["display"], str) and topic["display"]
        for key in ("url", "icon"):
            if key in source:
                assert source[key].startswith("https://")


@every_answered_fixture
def test_source_url_is_not_a_patient_specific_drill_down(responses, name):
    """source.url points to the cited document, never to something about this patient or call."""
    request = _request(name)
    for card in _cards(responses, name):
        url = card["source"].get("url", "")
        assert request["context"]["patientId"] not in url
        assert request["hookInstance"] not in url


@every_answered_fixture
def test_at_most_one_card_per_topic(responses, name):
    """No two cards of one response share a source.topic code."""
    topics = [c["source"]["topic"]["code"] for c in _cards(responses, name)]
    assert len(topics) == len(set(topics)), topics


@every_fixture
def test_same_request_gives_a_byte_identical_response(module_client, responses, name):
    """Posting the same request again gives the same bytes (deterministic uuids and order)."""
    request = _request(name)
    again = _post(module_client, name, request)
    assert (again.status_code, again.mimetype, again.get_data()) == responses[name]


# Query features CDS Hooks 2.0 (#prefetch-query-restrictions) recommends prefetch queries limit
# themselves to: reads of a known id, type searches by reference, token equality (system|code,
# comma = OR) and the :in modifier, date prefixes eq/lt/gt/ge/le, _count and _sort.
READ = re.compile(r"^[A-Z][A-Za-z]+/\{\{context\.\w+\}\}$")
SEARCH = re.compile(r"^[A-Z][A-Za-z]+\?(?P<query>.+)$")
ALLOWED_PARAMETER = re.compile(
    r"^(patient|subject|encounter|code|code:in|category|status|date|"
    r"_count|_sort)$"
)


def test_discovery_prefetch_queries_use_the_recommended_fhir_subset(module_client):
    """Every prefetch template is a read by id or a search with recommended parameters only."""
    for service in module_client.get("/cds-services").get_json()["services"]:
        for key, template in service["prefetch"].items():
            if READ.match(template):
                continue
            match = SEARCH.match(template)
            assert match, f"{key}: {template}"
            for part in match["query"].split("&"):
                parameter, _, value = part.partition("=")
                assert ALLOWED_PARAMETER.match(parameter), f"{key}: {parameter}"
                assert value, f"{key}: {parameter} has no value"
                if parameter == "date":
                    assert re.match(r"^(eq|lt|gt|ge|le)", value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"cards": []}, []),
        ({"a": None}, ["$.a"]),
        ({"a": [{"b": ""}]}, ["$.a[0].b"]),
        ({"a": {"b": {}}, "c": [[]]}, ["$.a.b", "$.c[0]"]),
        ({"a": 0, "b": False}, []),
    ],
    ids=[
        "an empty cards list",
        "a null",
        "an empty string in a list",
        "empty object and empty list",
        "zero and false are values",
    ],
)
def test_empty_value_walk_finds_what_it_should(value, expected):
    """The recursive walk used above reports exactly the null and empty values."""
    found = [p for p in _empty_values(value, "$") if p != "$.cards"]
    assert found == expected
