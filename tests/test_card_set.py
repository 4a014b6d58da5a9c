"""The card set of one alemtuzumab course (card contract 2.0): grouped cards, the checklist
extension, and where each finding goes (declared once, in cds_service/domain/checklist.py).

The clinical table (tests/test_scenarios.py) holds every fixture's checklist to its row; these
tests hold the parts of the contract no single row shows: several orders of one course, a
checklist item that gets no card, the grouped cards' suggestions and the declaration tables.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from fixture_requests import SERVICE_URL
from fixture_requests import fixture_request as _request

from cds_service.cards import GROUP_OVERRIDE_REASONS, _override_displays, wording_table
from cds_service.domain import evaluate as evaluate_module
from cds_service.domain.checklist import (
    ANY,
    CARD_CONTRACT_VERSION,
    GROUP_BY_REASON,
    STATUS_BY_REASON,
    CardGroup,
    card_group,
    checklist_indicator,
)
from cds_service.domain.findings import Finding, Severity, Status
from cds_service.domain.rules import RULES, RULES_BY_TOPIC
from cds_service.domain.rules.monitoring import MONITORING_RULES

CHECKLIST = "org.example.cds-service.checklist"
SUMMARY = "eligibility-summary"


def _post(client: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(SERVICE_URL[request["hook"]], json=request)
    assert response.status_code == 200, response.get_json()
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def _by_topic(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {card["source"]["topic"]["code"]: card for card in cards}


def _checks(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    extension = _by_topic(cards)[SUMMARY]["extension"][CHECKLIST]
    return {check["topic"]: check for check in extension["checks"]}


def _one_order_per_day(earlier_first: bool) -> dict[str, Any]:
    """The eligible patient's course drafted as two orders: the one of 2026-12-07 and a copy that
    starts a day earlier (as EHRs that draft one order per infusion day send them)."""
    request = _request("eligible_patient_at_order_select")
    entries = request["context"]["draftOrders"]["entry"]
    earlier = copy.deepcopy(entries[0])
    earlier["resource"]["id"] = "lemtrada-day-0"
    bounds = earlier["resource"]["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]
    bounds.update(start="2026-12-06", end="2026-12-10")
    entries.insert(0 if earlier_first else 1, earlier)
    request["context"]["selections"] = [f"MedicationRequest/{e['resource']['id']}" for e in entries]
    return request


@pytest.mark.parametrize(
    "earlier_first",
    [True, False],
    ids=["the earlier order drafted first", "the earlier order drafted second"],
)
def test_all_alemtuzumab_orders_under_review_are_one_course(client, earlier_first):
    """Two alemtuzumab orders under review get one card set whose T0 is the earliest start."""
    cards = _post(client, _one_order_per_day(earlier_first))
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [(SUMMARY, "info")]
    assert "Planned first infusion: 2026-12-06" in cards[0]["detail"]
    assert "MedicationRequest/lemtrada-day-0" in cards[0]["detail"]


def test_pregnancy_check_for_a_man_is_not_applicable(client):
    """A man's pregnancy check is not applicable in the checklist: no status to act on."""
    checks = _checks(_post(client, _request("eligible_adult_man_needs_no_pregnancy_test")))
    assert checks["pregnancy"]["status"] == "not-applicable"
    assert "indicator" not in checks["pregnancy"]


def test_an_info_item_to_confirm_is_in_the_checklist_but_gets_no_card(client, monkeypatch):
    """A check that is not met with severity info (an item to confirm) is listed in the checklist
    with indicator info, and the eligible patient still gets the summary card alone."""
    malignancy = RULES_BY_TOPIC["malignancy"]

    def to_confirm(*_: Any) -> Finding:
        return Finding(
            "malignancy", Status.NOT_MET, Severity.INFO, reason="current", facts={"condition": "x"}
        )

    rules = tuple(
        dataclasses.replace(rule, check=to_confirm) if rule is malignancy else rule
        for rule in RULES
    )
    monkeypatch.setattr(evaluate_module, "RULES", rules)
    cards = _post(client, _request("eligible_patient_at_order_select"))
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [(SUMMARY, "info")]
    check = _checks(cards)["malignancy"]
    assert (check["status"], check["indicator"]) == ("not-met", "info")


GROUPED_CASES = [
    ("prefetch_values_null", "pretreatment-workup", "ServiceRequest"),
    ("hepatitis_b_screening_missing", "pretreatment-workup", "ServiceRequest"),
    ("order_sign_without_premedication_or_prophylaxis", "infusion-day-orders", "MedicationRequest"),
]


@pytest.mark.parametrize(
    ("name", "topic", "resource_type"),
    GROUPED_CASES,
    ids=[f"{topic} card of {name}" for name, topic, _ in GROUPED_CASES],
)
def test_grouped_card_suggests_each_order_once_and_none_for_all(client, name, topic, resource_type):
    """A grouped card suggests each order on its own (recommended, choose any), one resource per
    suggestion, never an "order all" that would duplicate them."""
    card = _by_topic(_post(client, _request(name)))[topic]
    assert card["selectionBehavior"] == "any"
    suggestions = card["suggestions"]
    assert all(s["isRecommended"] is True for s in suggestions)
    assert all(len(s["actions"]) == 1 for s in suggestions)
    assert {a["resource"]["resourceType"] for s in suggestions for a in s["actions"]} == {
        resource_type
    }
    codes = [
        a["resource"]["code" if resource_type == "ServiceRequest" else "medicationCodeableConcept"][
            "coding"
        ][0]["code"]
        for s in suggestions
        for a in s["actions"]
    ]
    assert len(codes) == len(set(codes)), codes
    assert card["overrideReasons"] and card["links"]


def test_review_card_lists_one_line_per_item(client):
    """The review card of a patient with a single judgement item names it in its summary and
    has one line for it."""
    card = _by_topic(_post(client, _request("only_one_prior_dmt")))["review-before-start"]
    assert card["summary"].startswith("Review before starting Lemtrada: 1 prior MS therapy found")
    assert sum(1 for line in card["detail"].splitlines() if line.startswith("- ")) == 1


MONITORING_TOPICS = {rule.topic for rule in MONITORING_RULES}


def test_declared_groups_and_statuses_name_declared_checks_and_worded_reasons():
    """Each (topic, reason) of the declaration tables names a check of the rule table (or any)
    and a reason worded in wording.toml, so a renamed reason cannot silently change a card."""
    worded = set(wording_table())
    for topic, reason in [*GROUP_BY_REASON, *STATUS_BY_REASON]:
        assert topic == ANY or topic in RULES_BY_TOPIC or topic in MONITORING_TOPICS, topic
        if reason == ANY or reason in ("awaiting-result", "not-applicable"):
            continue
        assert (
            (topic, reason) in worded
            or (ANY, reason) in worded
            or any(r == reason for _, r in worded)
        ), (topic, reason)


def test_every_grouped_card_offers_known_override_reasons():
    """The override reasons of each grouped card are codes of the CDS Hooks vocabulary."""
    displays = _override_displays()
    for group in (CardGroup.WORKUP, CardGroup.REVIEW, CardGroup.INFUSION_DAY):
        assert GROUP_OVERRIDE_REASONS[group]
        assert set(GROUP_OVERRIDE_REASONS[group]) <= set(displays)


@pytest.mark.parametrize(
    ("finding", "group", "indicator"),
    [
        (
            Finding("tb-screening", Status.UNKNOWN, Severity.WARNING, reason="missing"),
            CardGroup.WORKUP,
            "warning",
        ),
        (
            Finding("tb-screening", Status.NOT_MET, Severity.CRITICAL, reason="positive"),
            CardGroup.OWN,
            "critical",
        ),
        (
            Finding("thyroid-disorder", Status.NOT_MET, Severity.WARNING, reason="current"),
            CardGroup.REVIEW,
            "warning",
        ),
        (
            Finding("premedication", Status.NOT_MET, Severity.WARNING, reason="not-ordered"),
            CardGroup.INFUSION_DAY,
            "warning",
        ),
        (Finding("pregnancy", Status.MET, Severity.INFO, reason="male"), None, None),
        (
            Finding("indication", Status.NOT_MET, Severity.WARNING, reason="a-new-reason"),
            CardGroup.REVIEW,
            "warning",
        ),
        (
            Finding("indication", Status.UNKNOWN, Severity.INFO, reason="a-new-reason"),
            CardGroup.REVIEW,
            "warning",
        ),
    ],
    ids=[
        "a missing test goes to the work-up card",
        "a critical finding keeps its own card",
        "a judgement goes to the review card",
        "a missing premedication goes to the infusion-day card",
        "a man's pregnancy check gets no card",
        "an undeclared reason is still shown, on the review card",
        "unknown evidence is never a mere item to confirm",
    ],
)
def test_each_finding_goes_to_its_declared_card(finding, group, indicator):
    assert card_group(finding) is group
    assert checklist_indicator(finding) == indicator


def test_discovery_readme_and_changelog_name_the_card_contract_version(client):
    """Each service says at discovery which card contract it answers with, and the README and
    CHANGELOG.md name the same version."""
    root = Path(__file__).resolve().parents[1]
    services = client.get("/cds-services").get_json()["services"]
    versions = {
        s["extension"]["org.example.cds-service.card-contract"]["version"] for s in services
    }
    assert versions == {CARD_CONTRACT_VERSION}
    assert f"Card contract **version {CARD_CONTRACT_VERSION}**" in (root / "README.md").read_text()
    changelog = (root / "CHANGELOG.md").read_text()
    assert f"## Card contract {CARD_CONTRACT_VERSION}:" in changelog
