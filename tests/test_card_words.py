"""Words for clinicians: every card of every fixture, under both order hooks, and of every
monitoring fixture (patient-view), is free of FHIR paths, resource ids, UCUM braces, "(s)"
plurals and repeated citations.

Identifiers belong in the checklist extension, or in the one short "Evidence" list that ends the
summary card's detail (the order that was recognised); everything above it is for a clinician.
"""

from __future__ import annotations

import json
import re
from typing import Any
from unittest import mock

import pytest
from fixture_requests import MONITORING_TODAY, SERVICE_URL, monitoring_cases
from fixture_requests import fixture_request as _request
from golden_responses import cases, under_hook

JARGON = {
    "a FHIR path": re.compile(r"\b(Patient|Observation|Condition|MedicationRequest)\.[a-z]"),
    "a resource reference": re.compile(
        r"\b(Patient|Observation|Condition|Immunization|AllergyIntolerance|Medication"
        r"(Request|Statement|Administration)?|Procedure|ServiceRequest)/[A-Za-z0-9\-.]+"
    ),
    "a UCUM annotation in braces": re.compile(r"\{[A-Za-z' ]+\}"),
    "a FHIR element name": re.compile(
        r"\b(authoredOn|medicationCodeableConcept|medicationReference|birthDate|valueString)\b"
    ),
    "an (s) plural": re.compile(r"\w\(s\)"),
    "an unfilled placeholder": re.compile(r"\{[a-z_]+\}"),
}
EVIDENCE_HEADING = "**Evidence**"
CASES = cases() + monitoring_cases()
SUMMARY_TOPICS = ("eligibility-summary", "monitoring-summary")


def _clinician_text(card: dict[str, Any]) -> list[str]:
    """The summary and the detail a clinician reads (the summary card's closing Evidence list,
    which names the order, is for the pharmacist's audit and is left out)."""
    detail = card.get("detail", "")
    if card["source"]["topic"]["code"] in SUMMARY_TOPICS:
        detail = detail.split(EVIDENCE_HEADING)[0]
    return [card["summary"], detail]


@pytest.fixture(scope="module")
def answers(module_client: Any) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out = {}
    for name, hook in CASES:
        with mock.patch("cds_service.http_api.today", return_value=MONITORING_TODAY):
            response = module_client.post(SERVICE_URL[hook], json=under_hook(_request(name), hook))
        out[(name, hook)] = (
            json.loads(response.get_data())["cards"] if response.status_code == 200 else []
        )
    return out


@pytest.mark.parametrize(("name", "hook"), CASES, ids=[f"{n} at {h}" for n, h in CASES])
def test_cards_speak_to_clinicians_without_jargon(answers, name, hook):
    """No card summary or detail of the answer carries FHIR or code jargon."""
    found = [
        f"{card['source']['topic']['code']}: {what}: {match.group(0)!r}"
        for card in answers[(name, hook)]
        for text in _clinician_text(card)
        for what, pattern in JARGON.items()
        for match in pattern.finditer(text)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(("name", "hook"), CASES, ids=[f"{n} at {h}" for n, h in CASES])
def test_each_card_cites_once_and_links_what_it_cites(answers, name, hook):
    """Each card has one short citation line (never a repeated block of policy lines) and links,
    of type absolute, to the documents it cites."""
    for card in answers[(name, hook)]:
        detail = card.get("detail", "")
        citations = [line for line in detail.splitlines() if line.startswith(("Source", "Policy:"))]
        assert len(citations) == 1, (card["source"]["topic"]["code"], citations)
        assert card["links"] and all(link["type"] == "absolute" for link in card["links"])
        labels = [link["label"] for link in card["links"]]
        assert len(labels) == len(set(labels)), labels


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("a FHIR path", "Patient.gender female"),
        ("a resource reference", "(Observation/hcg-urine-negative; read from interpretation)"),
        ("a UCUM annotation in braces", "dose 1 {pill} not readable as mg"),
        ("an (s) plural", "2 record(s) unreadable"),
    ],
    ids=["a FHIR path", "a resource id", "UCUM braces", "an (s) plural"],
)
def test_jargon_patterns_catch_what_the_issue_quotes(pattern, text):
    """The patterns find the jargon issue 14 quotes from real cards."""
    assert JARGON[pattern].search(text)
