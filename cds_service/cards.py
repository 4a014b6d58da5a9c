"""Findings -> CDS Hooks cards: wording, indicator, source and citation, topic, uuids, suggestions.

All presentation lives here: the sentences of findings that carry a reason code come from
wording.toml (every sentence a clinician should review, in one file), filled with the finding's
facts and the policy numbers. Card and suggestion uuids are uuid5 of the hookInstance and topic, so
the same request always gives the same cards, and feedback can be joined back to a topic.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import uuid
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from .domain import orderables
from .domain.evaluate import Checked
from .domain.fhirdata import LOINC
from .domain.findings import Evidence, Finding, Severity, Status, Suggestion
from .domain.orders import OrderContext
from .domain.policy import Policy
from .domain.rules import Rule
from .domain.terminology import BASE_URL

TOPIC_SYSTEM = f"{BASE_URL}/CodeSystem/card-topic"
SUMMARY_TOPIC = "eligibility-summary"
NON_ADHERENCE = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
UUID_NAMESPACE = uuid.UUID("6d0f3c1e-9a7b-5c2d-8e4f-1a2b3c4d5e6f")
MAX_SUMMARY = 139
SOURCE_LABELS = {
    "label": "LEMTRADA Prescribing Information",
    "rems": "LEMTRADA REMS",
    "local": "LEMTRADA eligibility policy",
}


@cache
def _override_displays() -> dict[str, str]:
    doc = json.loads(
        (
            resources.files("cds_service")
            / "terminology"
            / "CodeSystem-non-adherence-reason-codes.json"
        ).read_text(encoding="utf-8")
    )
    out: dict[str, str] = {}

    def walk(concepts: list[dict[str, Any]]) -> None:
        for concept in concepts:
            out[concept["code"]] = concept["display"]
            walk(concept.get("concept", []))

    walk(doc["concept"])
    return out


@dataclasses.dataclass(frozen=True)
class Wording:
    """The sentences of one (topic, reason): a summary and the detail's paragraphs."""

    headline: str
    explanation: tuple[str, ...] = ()
    short_headline: str = ""
    """Said instead of `headline` when that would not fit a card summary (139 characters)."""


ANY_TOPIC = "any"
EVIDENCE = "evidence"
SUGGESTION = "suggestion"
PARTS = (EVIDENCE, SUGGESTION)
"""Top-level tables of wording.toml that are not topics: evidence lines and suggested orders."""
ORDER_LABEL = "Order {display}"


def _wording_doc() -> dict[str, Any]:
    return tomllib.loads(
        (resources.files("cds_service") / "wording.toml").read_text(encoding="utf-8")
    )


@cache
def wording_table() -> dict[tuple[str, str], Wording]:
    """wording.toml's findings as {(topic or 'any', reason): Wording}, read once."""
    return {
        (topic, reason): Wording(
            entry["headline"], tuple(entry.get("explanation", ())), entry.get("short_headline", "")
        )
        for topic, reasons in _wording_doc().items()
        if topic not in PARTS
        for reason, entry in reasons.items()
    }


@cache
def wording_parts() -> dict[str, dict[str, Any]]:
    """wording.toml's [evidence] lines ({kind: template}) and [suggestion.<name>] entries
    (display, label, reason, dosage templates), read once."""
    doc = _wording_doc()
    return {part: dict(doc.get(part, {})) for part in PARTS}


def _filled(facts: Mapping[str, Any], numbers: Mapping[str, Any]) -> dict[str, Any]:
    """Facts with their evidence parts worded (joined with '; ')."""
    return {
        name: "; ".join(_evidence_text(part, numbers) for part in value)
        if isinstance(value, tuple)
        else value
        for name, value in facts.items()
    }


def _evidence_text(evidence: Evidence, numbers: Mapping[str, Any]) -> str:
    facts = _filled(evidence.facts, numbers)
    template = wording_parts()[EVIDENCE].get(evidence.kind)
    if template is None:  # a kind without a sentence (tests prevent it): show the data
        return f"{evidence.kind}: " + "; ".join(f"{k} {v}" for k, v in facts.items())
    return str(template.format_map({**numbers, **facts}))


def _worded_suggestion(suggestion: Suggestion, numbers: Mapping[str, Any]) -> Suggestion:
    """The suggestion with its label, display, reason and dosage text from wording.toml."""
    entry = wording_parts()[SUGGESTION].get(suggestion.wording)
    if entry is None:
        return suggestion
    display = entry.get("display", suggestion.display)
    values = {**numbers, **suggestion.facts, "display": display}
    details = dict(suggestion.details)
    if "reason" in entry:
        details["reason"] = entry["reason"].format_map(values)
    if "dosage" in entry and isinstance(details.get("dosage"), dict):
        # FHIR Dosage order: the text follows the sequence number.
        dosage = details["dosage"]
        details["dosage"] = {
            "sequence": dosage.get("sequence"),
            "text": entry["dosage"].format_map(values),
            **{k: v for k, v in dosage.items() if k not in ("sequence", "text")},
        }
    return dataclasses.replace(
        suggestion,
        display=display,
        details=details,
        label=entry.get("label", ORDER_LABEL).format_map(values),
    )


def worded(finding: Finding, policy: Policy) -> Finding:
    """The finding with its headline, explanation, evidence lines and suggestion labels written
    from wording.toml (a finding without a reason code keeps its own headline)."""
    numbers = policy.placeholders()
    finding = dataclasses.replace(
        finding,
        evidence=tuple(
            dataclasses.replace(e, text=_evidence_text(e, numbers)) for e in finding.evidence
        ),
        suggestions=tuple(_worded_suggestion(s, numbers) for s in finding.suggestions),
    )
    if not finding.reason:
        return finding
    table = wording_table()
    entry = table.get((finding.topic, finding.reason)) or table.get((ANY_TOPIC, finding.reason))
    if entry is None:  # a reason without sentences (tests prevent it): say the code, never fail
        entry = Wording(f"{finding.topic}: {finding.reason} (no wording; check manually)")
    # {first_evidence}: a headline that names the first problem its evidence lists.
    first = finding.evidence[0].text if finding.evidence else ""
    values = {**numbers, "first_evidence": first, **_filled(finding.facts, numbers)}
    headline = entry.headline.format_map(values)
    if entry.short_headline and len(headline) > MAX_SUMMARY:
        headline = entry.short_headline.format_map(values)
    return dataclasses.replace(
        finding,
        headline=headline,
        explanation=tuple(line.format_map(values) for line in entry.explanation),
    )


def card_uuid(hook_instance: str, topic: str, part: str = "") -> str:
    return str(uuid.uuid5(UUID_NAMESPACE, f"{hook_instance}|{topic}|{part}"))


def fit_summary(text: str) -> str:
    """A summary under 140 characters, cut at a word with an ellipsis if it must be."""
    text = " ".join(text.split())
    if len(text) <= MAX_SUMMARY:
        return text
    return text[: MAX_SUMMARY - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _md(text: str) -> str:
    """Escape a value for a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _topic_coding(topic: str, display: str) -> dict[str, str]:
    return {"system": TOPIC_SYSTEM, "code": topic, "display": display}


def card_topic(card: Mapping[str, Any]) -> str:
    """The topic code a card carries in source.topic (audit, metrics and logs read it back)."""
    return str(((card.get("source") or {}).get("topic") or {}).get("code") or "(no topic)")


def _source(rule: Rule, policy: Policy) -> dict[str, Any]:
    return {
        "label": SOURCE_LABELS[rule.source],
        "url": policy.sources[rule.source].url,
        "topic": _topic_coding(rule.topic, rule.titled(policy)),
    }


def suggestion_resource(suggestion: Suggestion, patient_id: str) -> dict[str, Any]:
    """A new FHIR R4 resource (never a mutation of the request) that closes the gap."""
    coding = {
        "system": suggestion.code[0],
        "code": suggestion.code[1],
        "display": suggestion.display,
    }
    subject = {"reference": f"Patient/{patient_id}"}
    if suggestion.kind == "lab":
        resource: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "order",
            "category": [{"coding": [orderables.coding("laboratory")]}],
            "code": {"coding": [coding], "text": suggestion.display},
            "subject": subject,
        }
        if suggestion.details.get("reason"):
            resource["reasonCode"] = [{"text": suggestion.details["reason"]}]
        return resource
    details = suggestion.details
    resource = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [coding], "text": suggestion.display},
        "subject": subject,
        "dosageInstruction": [details["dosage"]] if "dosage" in details else [],
    }
    if details.get("reason"):
        resource["reasonCode"] = [{"text": details["reason"]}]
    if not resource["dosageInstruction"]:
        del resource["dosageInstruction"]
    return resource


def _suggestions(finding: Finding, hook_instance: str, patient_id: str) -> list[dict[str, Any]]:
    out = []
    for suggestion in finding.suggestions:
        out.append(
            {
                "label": suggestion.label,
                "uuid": card_uuid(hook_instance, finding.topic, suggestion.key),
                "actions": [
                    {
                        "type": "create",
                        "description": f"{suggestion.label} ({suggestion.code[1]})"
                        if suggestion.code[0] == LOINC
                        else suggestion.label,
                        "resource": suggestion_resource(suggestion, patient_id),
                    }
                ],
            }
        )
    return out


def _detail(rule: Rule, finding: Finding, policy: Policy) -> str:
    lines = list(finding.explanation)
    if finding.evidence:
        lines.append("")
        lines.append("**Evidence**")
        lines.extend(f"- {e.text}" for e in finding.evidence)
    if finding.unreadable:
        lines.append("")
        lines.append(
            "**Unreadable evidence** (could not be read, so it cannot count as an all-clear)"
        )
        lines.extend(f"- {u}" for u in finding.unreadable)
    lines.append("")
    source = policy.sources[rule.source]
    lines.append(f"Source: {source.title}, {rule.citation}.")
    for key in rule.policy_keys:
        number = policy.numbers[key]
        lines.append(f"Policy: {number.value} {number.unit} ({number.citation}).")
    return "\n".join(lines).strip()


def finding_card(
    rule: Rule, finding: Finding, hook_instance: str, patient_id: str, policy: Policy
) -> dict[str, Any]:
    """The card for one unsatisfied check."""
    card: dict[str, Any] = {
        "uuid": card_uuid(hook_instance, finding.topic),
        "summary": fit_summary(finding.headline),
        "indicator": finding.severity.indicator,
        "detail": _detail(rule, finding, policy),
        "source": _source(rule, policy),
    }
    suggestions = _suggestions(finding, hook_instance, patient_id)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "any"
    reasons = rule.override_reasons
    displays = _override_displays()
    card["overrideReasons"] = [
        {"system": NON_ADHERENCE, "code": code, "display": displays[code]} for code in reasons
    ]
    return card


STATUS_MARK = {Status.MET: "met", Status.NOT_MET: "NOT MET", Status.UNKNOWN: "unknown"}


def summary_card(
    checked: list[Checked],
    order: OrderContext,
    hook_instance: str,
    policy: Policy,
    reminders: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The pharmacist's checklist: every check with its status and evidence."""
    findings = [finding for _, finding in checked]
    shown = [f for f in findings if f.shown]
    worst = max((f.severity for f in shown), default=Severity.INFO)
    counts = {
        s: sum(1 for f in shown if f.severity is s) for s in (Severity.CRITICAL, Severity.WARNING)
    }
    to_confirm = sum(1 for f in findings if f.to_confirm)
    if not shown and to_confirm:
        summary = (
            f"Lemtrada eligibility: no problem found in {len(findings)} checks for a start on "
            f"{order.t0}; {to_confirm} item(s) to confirm in the checklist"
        )
    elif not shown:
        summary = f"Lemtrada eligibility: all {len(findings)} checks met for a start on {order.t0}"
    else:
        parts = [f"{n} {s.indicator}" for s, n in counts.items() if n]
        summary = (
            f"Lemtrada eligibility: {', '.join(parts)} of {len(findings)} checks; see checklist"
        )
    lines = [
        f"Order {order.order.reference} recognised as Lemtrada by {order.order.matched_by}; "
        f"planned start (T0) {order.t0} from {order.t0_source}.",
        "",
        "| Check | Status | Evidence |",
        "|---|---|---|",
    ]
    for rule, finding in checked:
        title = rule.titled(policy)
        evidence = "; ".join(e.text for e in finding.evidence) or finding.headline
        if finding.unreadable:
            evidence += "; unreadable: " + "; ".join(str(u) for u in finding.unreadable)
        lines.append(
            f"| {_md(title)} (`{finding.topic}`) | {STATUS_MARK[finding.status]} | "
            f"{_md(evidence)} |"
        )
    if reminders:
        lines.append("")
        lines.extend(reminders)
    return {
        "uuid": card_uuid(hook_instance, SUMMARY_TOPIC),
        "summary": fit_summary(summary),
        "indicator": worst.indicator,
        "detail": "\n".join(lines),
        "source": {
            "label": SOURCE_LABELS["label"],
            "url": policy.sources["label"].url,
            "topic": _topic_coding(SUMMARY_TOPIC, "Lemtrada eligibility checklist"),
        },
    }


def build_cards(
    checked: list[Checked],
    order: OrderContext,
    hook_instance: str,
    patient_id: str,
    policy: Policy,
    reminders: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """One card per unsatisfied check, most urgent first, then the summary; nothing else."""
    checked = [(rule, worded(finding, policy)) for rule, finding in checked]
    ranked = sorted(
        (pair for pair in checked if pair[1].shown), key=lambda pair: -pair[1].severity
    )  # stable: rule-table order within a severity
    cards = [finding_card(rule, f, hook_instance, patient_id, policy) for rule, f in ranked]
    summary = summary_card(checked, order, hook_instance, policy, reminders)
    # The summary goes after the specific cards of its own severity, before milder ones.
    position = sum(1 for _, f in ranked if f.severity >= Severity[summary["indicator"].upper()])
    cards.insert(position, summary)
    return cards
