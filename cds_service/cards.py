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

from .domain.checklist import (
    GROUPED,
    CardGroup,
    ChecklistStatus,
    card_group,
    checklist_indicator,
    checklist_severity,
    checklist_status,
)
from .domain.evaluate import Checked
from .domain.fhirdata import LOINC
from .domain.findings import Evidence, Finding, Severity, Suggestion
from .domain.orders import OrderContext
from .domain.policy import Policy
from .domain.record import Unreadable
from .domain.rules import Rule
from .domain.rules.monitoring import MONITORING_RULES
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
    count: str = ""
    """The fact whose value 0 or 1 picks headline_zero / headline_one (correct plurals)."""
    by_count: tuple[tuple[int, str], ...] = ()


ANY_TOPIC = "any"
EVIDENCE = "evidence"
SUGGESTION = "suggestion"
CARD = "card"
PARTS = (EVIDENCE, SUGGESTION, CARD)
"""Top-level tables of wording.toml that are not topics: evidence lines, suggested orders and the
sentences of the grouped cards and the summary."""
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
            entry["headline"],
            tuple(entry.get("explanation", ())),
            entry.get("short_headline", ""),
            entry.get("count", ""),
            tuple(
                (n, entry[key])
                for n, key in ((0, "headline_zero"), (1, "headline_one"))
                if key in entry
            ),
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


def card_words(card: str) -> dict[str, str]:
    """wording.toml's [card.<card>] sentences."""
    return dict(wording_parts()[CARD][card])


def counted(card: str, key: str, count: int, values: Mapping[str, Any]) -> str:
    """The sentence `key`_one or `key`_other of [card.<card>], as the count asks."""
    words = card_words(card)
    return words[f"{key}_one" if count == 1 else f"{key}_other"].format_map(
        {**values, "count": count}
    )


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
    headline = (
        dict(entry.by_count).get(values.get(entry.count, -1), entry.headline)
        if entry.count
        else entry.headline
    )
    headline = headline.format_map(values)
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


def suggestion_checks(checked: list[Checked], hook_instance: str) -> tuple[tuple[str, str], ...]:
    """(suggestion uuid, check topic) of every suggestion a grouped card offers: the issued-card
    audit keeps them, so feedback on the suggestion taken is counted per check."""
    return tuple(
        (card_uuid(hook_instance, finding.topic, suggestion.key), finding.topic)
        for _, finding in checked
        if card_group(finding) in GROUPED
        for suggestion in finding.suggestions
    )


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
    coding = {"system": suggestion.code[0], "code": suggestion.code[1]}
    subject = {"reference": f"Patient/{patient_id}"}
    if suggestion.kind == "lab":
        # Kept small (a work-up card may carry 15 of them): the LOINC code names the test for
        # the EHR, the suggestion's label names it for the clinician and the card says why; the
        # short reason goes in the action's description.
        return {
            "resourceType": "ServiceRequest",
            "status": "draft",
            "intent": "order",
            "code": {"coding": [coding]},
            "subject": subject,
        }
    coding["display"] = suggestion.display
    details = suggestion.details
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [coding]},
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
                        "description": str(suggestion.details.get("reason") or suggestion.label)
                        if suggestion.code[0] == LOINC
                        else suggestion.label,
                        "resource": suggestion_resource(suggestion, patient_id),
                    }
                ],
            }
        )
    return out


def _citation(rule: Rule, policy: Policy) -> str:
    """One short citation line: the document and the section, never the policy numbers."""
    source = policy.sources[rule.source]
    return card_words("citation")["own"].format(source=source.title, citation=rule.citation)


def _links(rules: list[Rule], policy: Policy) -> list[dict[str, str]]:
    """A link (type absolute) to each document the card cites, once per address."""
    labels = card_words("link")
    links: dict[str, dict[str, str]] = {}
    for rule in rules:
        url = policy.sources[rule.source].url
        links.setdefault(url, {"label": labels[rule.source], "url": url, "type": "absolute"})
    return list(links.values())


def _sources_named(rules: list[Rule], policy: Policy) -> str:
    titles: dict[str, None] = {}
    for rule in rules:
        titles.setdefault(policy.sources[rule.source].title, None)
    return "; ".join(titles)


def _override_reasons(codes: tuple[str, ...]) -> list[dict[str, str]]:
    displays = _override_displays()
    return [{"system": NON_ADHERENCE, "code": code, "display": displays[code]} for code in codes]


def _detail(rule: Rule, finding: Finding, policy: Policy) -> str:
    lines = list(finding.explanation)
    if finding.evidence:
        lines.append("")
        lines.append(card_words("heading")["evidence"])
        lines.extend(f"- {e.text}" for e in finding.evidence)
    if finding.unreadable:
        lines.append("")
        lines.append(card_words("heading")["unreadable"])
        lines.extend(f"- {u}" for u in finding.unreadable)
    lines.append("")
    lines.append(_citation(rule, policy))
    return "\n".join(lines).strip()


def finding_card(
    rule: Rule, finding: Finding, hook_instance: str, patient_id: str, policy: Policy
) -> dict[str, Any]:
    """The card of one critical check: a hard stop stands alone."""
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
    card["overrideReasons"] = _override_reasons(rule.override_reasons)
    card["links"] = _links([rule], policy)
    return card


GROUP_OVERRIDE_REASONS: dict[CardGroup, tuple[str, ...]] = {
    CardGroup.WORKUP: ("action-completed", "need-more-info", "indication-order-exists"),
    CardGroup.REVIEW: ("risk-benefit-ratio", "recipient-disagrees-evidence", "expert-contradicts"),
    CardGroup.INFUSION_DAY: (
        "indication-order-exists",
        "patient-contraindication",
        "policy-contradicts",
    ),
}
"""The override reasons each grouped card offers (CDS Hooks non-adherence reason codes)."""


def _short_name(rule: Rule, policy: Policy) -> str:
    return card_words("short-name").get(rule.topic) or rule.titled(policy)


def _item_line(finding: Finding) -> str:
    """One line of a grouped card: the finding, then its evidence."""
    line = f"- {finding.headline}"
    # An evidence line the headline already says ({first_evidence}) is not said twice.
    evidence = "; ".join(e.text for e in finding.evidence if e.text not in finding.headline)
    if evidence:
        line += f" ({evidence})"
    if finding.unreadable:
        line += "; " + counted("item", "unreadable", len(finding.unreadable), {})
    return line


def grouped_card(
    group: CardGroup,
    members: list[Checked],
    hook_instance: str,
    patient_id: str,
    policy: Policy,
    topic: str = "",
) -> dict[str, Any]:
    """One card for the problems of a group: a line per check and a suggestion per order.
    `topic` is the card's topic and the key of its sentences (default: the group's, as the
    order services name it; the monitoring service names its own, MONITORING_CARD_TOPICS)."""
    topic = topic or group.value
    rules = [rule for rule, _ in members]
    findings = [finding for _, finding in members]
    words = card_words(topic)
    names = ", ".join(_short_name(rule, policy) for rule in rules)
    orders = len({s.key for f in findings for s in f.suggestions})
    summary = counted(
        topic,
        "summary",
        len(members),
        {"names": names, "first": findings[0].headline, "tests": orders},
    )
    lines = [words["intro"], ""]
    lines.extend(_item_line(finding) for finding in findings)
    lines += ["", card_words("citation")["grouped"].format(sources=_sources_named(rules, policy))]
    card: dict[str, Any] = {
        "uuid": card_uuid(hook_instance, topic),
        "summary": fit_summary(summary),
        "indicator": max(checklist_severity(f) or Severity.WARNING for f in findings).indicator,
        "detail": "\n".join(lines),
        "source": {
            "label": SOURCE_LABELS[rules[0].source],
            "url": policy.sources[rules[0].source].url,
            "topic": _topic_coding(topic, words["title"]),
        },
    }
    suggestions: dict[str, dict[str, Any]] = {}
    for finding in findings:
        for suggestion in _suggestions(finding, hook_instance, patient_id):
            suggestions.setdefault(suggestion["uuid"], {**suggestion, "isRecommended": True})
    if suggestions:
        card["suggestions"] = list(suggestions.values())
        card["selectionBehavior"] = "any"
    card["overrideReasons"] = _override_reasons(GROUP_OVERRIDE_REASONS[group])
    card["links"] = _links(rules, policy)
    return card


CHECKLIST_EXTENSION = "org.example.cds-service.checklist"
CHECKLIST_VERSION = 1


def _evidence_items(evidence: tuple[Evidence, ...]) -> list[dict[str, str]]:
    """The resource references and codes an evidence list names (parts included), once each."""
    out: list[dict[str, str]] = []
    for item in evidence:
        facts = item.facts
        entry: dict[str, str] = {}
        if isinstance(facts.get("reference"), str) and facts["reference"]:
            entry["reference"] = str(facts["reference"])
        code, system = facts.get("code"), facts.get("system")
        if isinstance(code, (str, int)) and str(code):
            entry["code"] = str(code)
            if isinstance(system, str) and system:
                entry["system"] = system
        if entry and entry not in out:
            out.append(entry)
        for value in facts.values():
            if isinstance(value, tuple):
                out.extend(e for e in _evidence_items(value) if e not in out)
    return out


def checklist(checked: list[Checked], dates: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The machine-readable checklist: one object per check run for this hook, in rule order;
    the monitoring service adds its `dates` (ISO dates: last infusion, end of monitoring...)."""
    checks = []
    for _, finding in checked:
        item: dict[str, Any] = {
            "topic": finding.topic,
            "status": checklist_status(finding).value,
        }
        indicator = checklist_indicator(finding)
        if indicator is not None:
            item["indicator"] = indicator
        item["summary"] = fit_summary(finding.headline)
        evidence = _evidence_items(finding.evidence)
        evidence += [
            {"reference": u.reference}
            for u in finding.unreadable
            if u.reference and {"reference": u.reference} not in evidence
        ]
        if evidence:
            item["evidence"] = evidence
        checks.append(item)
    out: dict[str, Any] = {"version": CHECKLIST_VERSION, "checks": checks}
    if dates is not None:
        out["dates"] = dict(dates)
    return out


def checklist_of(cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The checklist extension of a response's summary card (None when there are no cards)."""
    for card in cards:
        if card_topic(card) in (SUMMARY_TOPIC, MONITORING_SUMMARY_TOPIC):
            value: dict[str, Any] = card["extension"][CHECKLIST_EXTENSION]
            return value
    return None


def summary_card(
    checked: list[Checked],
    order: OrderContext,
    hook_instance: str,
    policy: Policy,
    reminders: tuple[str, ...] = (),
    worst: Severity = Severity.INFO,
) -> dict[str, Any]:
    """The pharmacist's checklist: problems first and marked, then the rest; one line each.
    `worst` is the worst indicator of the other cards sent, which the summary carries."""
    words = card_words(SUMMARY_TOPIC)
    summary = _summary_line(
        SUMMARY_TOPIC, checked, {"total": len(checked), "t0": order.t0.isoformat()}
    )
    lines = [
        words["planned_start"].format(t0=order.t0.isoformat(), t0_source=order.t0_source),
        "",
        *_checklist_table(checked, policy, SUMMARY_TOPIC),
    ]
    if reminders:
        lines.append("")
        lines.extend(reminders)
    lines += [
        "",
        card_words("citation")["summary"].format(sources=policy.sources["label"].title),
        "",
        card_words("heading")["evidence"],
        "- "
        + words["order"].format(reference=order.order.reference, matched_by=order.order.matched_by),
    ]
    return _checklist_card(
        SUMMARY_TOPIC, hook_instance, summary, worst, lines, checklist(checked), policy
    )


def _checklist_card(
    topic: str,
    hook_instance: str,
    summary: str,
    indicator: Severity,
    lines: list[str],
    checklist_value: dict[str, Any],
    policy: Policy,
) -> dict[str, Any]:
    """A summary card (order or monitoring): cited to the label, linked to it, carrying the
    checklist extension. The one place its envelope is written."""
    return {
        "uuid": card_uuid(hook_instance, topic),
        "summary": fit_summary(summary),
        "indicator": indicator.indicator,
        "detail": "\n".join(lines),
        "source": {
            "label": SOURCE_LABELS["label"],
            "url": policy.sources["label"].url,
            "topic": _topic_coding(topic, card_words(topic)["title"]),
        },
        "links": [
            {
                "label": card_words("link")["label"],
                "url": policy.sources["label"].url,
                "type": "absolute",
            }
        ],
        "extension": {CHECKLIST_EXTENSION: checklist_value},
    }


def _summary_line(topic: str, checked: list[Checked], values: Mapping[str, Any]) -> str:
    """The summary card's summary: how many problems, else how many items to confirm, else all
    met (sentences of [card.<topic>])."""
    problems = sum(1 for _, finding in checked if finding.shown)
    to_confirm = sum(1 for _, finding in checked if finding.to_confirm)
    if problems:
        return counted(topic, "summary_problems", problems, values)
    if to_confirm:  # info items (no card of their own): nothing wrong, something to look at
        return counted(topic, "summary_to_confirm", to_confirm, values)
    return card_words(topic)["summary_met"].format_map(values)


def _checklist_table(checked: list[Checked], policy: Policy, topic: str) -> list[str]:
    """A summary card's checklist as a markdown table of what is not met: problems first and in
    bold (a problem shown on a grouped card points to it rather than repeating its line), then
    items to confirm; the met checks named on one line after the table."""
    marks = card_words("checklist-status")
    statuses = [checklist_status(finding) for _, finding in checked]
    lines = [card_words("heading")["checklist"], "|---|---|---|"]
    ranked = sorted(
        zip(checked, statuses, strict=True),
        key=lambda pair: (
            not pair[0][1].shown,
            not pair[0][1].to_confirm,
            -pair[0][1].severity,
        ),
    )  # stable: rule order within each rank: problems, then items to confirm, then the rest
    shown_on = card_words("checklist-where")
    met: list[str] = []
    for (rule, finding), status in ranked:
        title = _md(rule.titled(policy))
        mark = marks[status.value]
        group = card_group(finding)
        if status is ChecklistStatus.MET:  # one line after the table: problems stand out
            met.append(title)
            continue
        if finding.shown:  # what was found is said once: on the card that shows it
            title = f"**{title}**"
            said = (
                shown_on[group.value]
                if group in GROUPED and group is not None
                else _md(finding.headline)
            )
        elif finding.to_confirm:
            mark, said = marks["to-confirm"], _md(finding.headline)
        else:
            said = ""
        lines.append(f"| {title} | {mark} | {said} |")
    if met:
        lines += ["", counted(topic, "met", len(met), {"checks": "; ".join(met)})]
    return lines


def build_cards(
    checked: list[Checked],
    order: OrderContext,
    hook_instance: str,
    patient_id: str,
    policy: Policy,
    reminders: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The card set of one alemtuzumab course: a card per critical check, then the work-up,
    review and infusion-day cards (each only when it has something to say), the summary placed
    after the cards of its own severity. Where each finding goes is declared in
    domain/checklist.py, not decided here."""
    checked = [(rule, worded(finding, policy)) for rule, finding in checked]
    own: list[dict[str, Any]] = []
    groups: dict[CardGroup, list[Checked]] = {group: [] for group in GROUPED}
    for rule, finding in checked:
        group = card_group(finding)
        if group is CardGroup.OWN:
            own.append(finding_card(rule, finding, hook_instance, patient_id, policy))
        elif group is not None:
            groups[group].append((rule, finding))
    cards = own + [
        grouped_card(group, members, hook_instance, patient_id, policy)
        for group, members in groups.items()
        if members
    ]
    cards.sort(key=lambda card: -Severity[card["indicator"].upper()])  # stable
    worst = max((Severity[c["indicator"].upper()] for c in cards), default=Severity.INFO)
    summary = summary_card(checked, order, hook_instance, policy, reminders, worst)
    # The summary goes after the cards of its own severity, before milder ones.
    position = sum(1 for c in cards if Severity[c["indicator"].upper()] >= worst)
    cards.insert(position, summary)
    return cards


MONITORING_SUMMARY_TOPIC = "monitoring-summary"
MONITORING_CARD_TOPICS: dict[CardGroup, str] = {
    CardGroup.WORKUP: "monitoring-workup",
    CardGroup.REVIEW: "monitoring-review",
    CardGroup.INFUSION_DAY: "monitoring-review",
}
"""The card topic of each group at patient-view (the groups are declared in domain/checklist.py;
there are no infusion-day orders when no order is being placed, so such a finding is reviewed)."""
MONITORING_DATES = ("lastInfusion", "monitoringEndsOn", "nextTshDue", "earliestNextCourse")
"""The keys of monitoring_dates, in the order the summary card lists them."""


def monitoring_summary_card(
    checked: list[Checked],
    dates: Mapping[str, str],
    hook_instance: str,
    policy: Policy,
    worst: Severity = Severity.INFO,
) -> dict[str, Any]:
    """The monitoring checklist: the dates that plan the next visit, then one line per check,
    problems first; its extension is the order services' checklist plus `dates`."""
    topic = MONITORING_SUMMARY_TOPIC
    words = card_words(topic)
    summary = _summary_line(topic, checked, {"total": len(checked), **dates})
    lines = [card_words("heading")["dates"], "|---|---|"]
    lines.extend(
        f"| {words[f'date_{key}']} | {dates[key]} |" for key in MONITORING_DATES if key in dates
    )
    lines += [
        "",
        *_checklist_table(checked, policy, topic),
        "",
        card_words("citation")["summary"].format(sources=policy.sources["label"].title),
    ]
    return _checklist_card(
        topic, hook_instance, summary, worst, lines, checklist(checked, dates), policy
    )


def unreadable_history_card(
    unreadable: tuple[Unreadable, ...], hook_instance: str, policy: Policy
) -> dict[str, Any]:
    """The monitoring answer when the only Lemtrada records could not be read (or the readable
    ones say monitoring ended): the service cannot place the infusions, so every monitoring check
    is unknown and the card asks to confirm the history, never an empty answer."""
    topic = MONITORING_SUMMARY_TOPIC
    words = card_words(topic)
    checks = [
        {
            "topic": rule.topic,
            "status": ChecklistStatus.UNKNOWN.value,
            "indicator": Severity.WARNING.indicator,
            "summary": words["history_unreadable_check"],
            "evidence": [{"reference": u.reference} for u in unreadable],
        }
        for rule in MONITORING_RULES
    ]
    lines = [
        words["history_unreadable_detail"],
        "",
        counted(topic, "history_unreadable_records", len(unreadable), {}),
        "",
        card_words("citation")["summary"].format(sources=policy.sources["label"].title),
    ]
    return _checklist_card(
        topic,
        hook_instance,
        words["history_unreadable_summary"],
        Severity.WARNING,
        lines,
        {"version": CHECKLIST_VERSION, "checks": checks},
        policy,
    )


def build_monitoring_cards(
    checked: list[Checked],
    dates: Mapping[str, str],
    hook_instance: str,
    patient_id: str,
    policy: Policy,
) -> list[dict[str, Any]]:
    """The card set of the monitoring service (patient-view): a card per critical finding, the
    `monitoring-workup` card (a ServiceRequest suggestion per overdue test), the
    `monitoring-review` card, and always the `monitoring-summary` card, placed after the cards of
    its own severity. Which group a finding goes to is declared in domain/checklist.py; only the
    group's topic is this service's (MONITORING_CARD_TOPICS)."""
    checked = [(rule, worded(finding, policy)) for rule, finding in checked]
    own: list[dict[str, Any]] = []
    groups: dict[str, tuple[CardGroup, list[Checked]]] = {}
    for rule, finding in checked:
        group = card_group(finding)
        if group is CardGroup.OWN:
            own.append(finding_card(rule, finding, hook_instance, patient_id, policy))
        elif group is not None:
            topic = MONITORING_CARD_TOPICS[group]
            groups.setdefault(topic, (group, []))[1].append((rule, finding))
    cards = own + [
        grouped_card(group, members, hook_instance, patient_id, policy, topic)
        for topic, (group, members) in sorted(
            groups.items(), key=lambda item: list(MONITORING_CARD_TOPICS.values()).index(item[0])
        )
    ]
    cards.sort(key=lambda card: -Severity[card["indicator"].upper()])  # stable
    worst = max((Severity[c["indicator"].upper()] for c in cards), default=Severity.INFO)
    summary = monitoring_summary_card(checked, dates, hook_instance, policy, worst)
    position = sum(1 for c in cards if Severity[c["indicator"].upper()] >= worst)
    cards.insert(position, summary)
    return cards
