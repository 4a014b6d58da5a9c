"""Where each finding goes: its checklist status and the card that shows it, declared once.

A check returns a Finding (status, severity, reason code). Two questions about it are answered
here and nowhere else, by tables keyed by (topic, reason), with ANY for every topic:
- its status in the machine-readable checklist (met, not-met, unknown, pending, not-applicable);
- the card that shows it: its own card (every critical finding: a hard stop stands alone), the
  work-up card (a test to order: missing, stale, unreadable or indeterminate), the review card
  (a judgement before the start), the infusion-day orders card (order-sign only), or none (met,
  not applicable, pending, or an INFO item to confirm in the checklist).
A (topic, reason) nobody declared goes to the review card: it is still shown, never dropped.
"""

from __future__ import annotations

from enum import Enum

from .findings import Finding, Severity, Status
from .rules.baseline import BASELINE_LABS_RULE
from .rules.monitoring import (
    CBC_RULE,
    LIVER_RULE,
    MONITORING_OVERDUE_RULE,
    RENAL_RULE,
    THYROID_RULE,
)
from .rules.order import HERPES_PROPHYLAXIS_RULE, PREMEDICATION_RULE
from .rules.pregnancy import PREGNANCY_RULE
from .rules.screening import (
    HBV_SCREENING_RULE,
    HCV_SCREENING_RULE,
    HIV_SCREENING_RULE,
    TB_SCREENING_RULE,
)
from .rules.vzv import VZV_IMMUNITY_RULE

ANY = "any"
CARD_CONTRACT_VERSION = "2.0"
"""The card contract's version: 1.0 was one card per check, 2.0 the grouped cards with the
checklist extension (README "Card contract", discovery, CHANGELOG.md)."""
CONTRACT_EXTENSION = "org.example.cds-service.card-contract"
"""The discovery extension (one per service) that says which card contract it answers with."""


class ChecklistStatus(Enum):
    """The status of one check in the checklist extension (CDS Hooks contract version 2)."""

    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"
    PENDING = "pending"
    NOT_APPLICABLE = "not-applicable"


class CardGroup(Enum):
    """The card a problem is shown on; the value is that card's topic (OWN: the check's own)."""

    OWN = "own"
    WORKUP = "pretreatment-workup"
    REVIEW = "review-before-start"
    INFUSION_DAY = "infusion-day-orders"


GROUPED = (CardGroup.WORKUP, CardGroup.REVIEW, CardGroup.INFUSION_DAY)
"""The grouped cards, in the order they appear."""

STATUS_BY_REASON: dict[tuple[str, str], ChecklistStatus] = {
    (PREGNANCY_RULE.topic, "male"): ChecklistStatus.NOT_APPLICABLE,
    (PREGNANCY_RULE.topic, "outside-age-range"): ChecklistStatus.NOT_APPLICABLE,
    (ANY, "awaiting-result"): ChecklistStatus.PENDING,
    (ANY, "not-applicable"): ChecklistStatus.NOT_APPLICABLE,
}
"""Reasons whose checklist status is not the plain reading of the Finding's status."""

_PLAIN_STATUS = {
    Status.MET: ChecklistStatus.MET,
    Status.NOT_MET: ChecklistStatus.NOT_MET,
    Status.UNKNOWN: ChecklistStatus.UNKNOWN,
}

TB, HIV, HCV, HBV = (
    TB_SCREENING_RULE.topic,
    HIV_SCREENING_RULE.topic,
    HCV_SCREENING_RULE.topic,
    HBV_SCREENING_RULE.topic,
)
VZV, PREGNANCY = VZV_IMMUNITY_RULE.topic, PREGNANCY_RULE.topic
MONITORED = (CBC_RULE.topic, RENAL_RULE.topic, THYROID_RULE.topic)
"""Monitoring checks of tests due at an interval (domain/rules/monitoring.py): overdue means a
test to order, in the work-up group (patient-view: the `monitoring-workup` card)."""
_TESTS = (
    TB,
    HIV,
    HCV,
    HBV,
    VZV,
    BASELINE_LABS_RULE.topic,
    PREGNANCY,
    *MONITORED,
    LIVER_RULE.topic,
)
"""Checks whose evidence is a test result: unreadable results mean a test to repeat."""

GROUP_BY_REASON: dict[tuple[str, str], CardGroup] = {
    # A test that is missing, too old, unreadable or indeterminate: order (or repeat) it.
    (ANY, "missing"): CardGroup.WORKUP,
    (ANY, "stale"): CardGroup.WORKUP,
    (TB, "indeterminate"): CardGroup.WORKUP,
    (HIV, "indeterminate"): CardGroup.WORKUP,
    (HCV, "antibody-positive"): CardGroup.WORKUP,
    (HCV, "antibody-indeterminate"): CardGroup.WORKUP,
    (HCV, "rna-indeterminate"): CardGroup.WORKUP,
    (HBV, "incomplete"): CardGroup.WORKUP,
    (VZV, "unknown"): CardGroup.WORKUP,
    (PREGNANCY, "no-test"): CardGroup.WORKUP,
    (PREGNANCY, "no-test-sex-unknown"): CardGroup.WORKUP,
    (PREGNANCY, "indeterminate-test"): CardGroup.WORKUP,
    **{(topic, "met-but-unreadable"): CardGroup.WORKUP for topic in _TESTS},
    **{(topic, "not-evaluated"): CardGroup.WORKUP for topic in _TESTS},
    # Monitoring tests overdue (a test to order each); abnormal monitoring results, complications,
    # herpes prophylaxis after the course go to the review group (the default); pending
    # (awaiting-result) and the items to confirm (not met + info: contraception, skin exam, HPV,
    # herpes prophylaxis without a CD4+ count) get no card.
    **{(topic, "overdue"): CardGroup.WORKUP for topic in MONITORED},
    **{(topic, "overdue-and-abnormal"): CardGroup.WORKUP for topic in MONITORED},
    (MONITORING_OVERDUE_RULE.topic, "overdue"): CardGroup.WORKUP,
    # What to give on the infusion days (order-sign checks).
    (PREMEDICATION_RULE.topic, ANY): CardGroup.INFUSION_DAY,
    (HERPES_PROPHYLAXIS_RULE.topic, ANY): CardGroup.INFUSION_DAY,
    # Everything else that is not critical is a judgement: the review card (the default).
}


def checklist_status(finding: Finding) -> ChecklistStatus:
    """The finding's status in the checklist extension."""
    table = STATUS_BY_REASON
    declared = table.get((finding.topic, finding.reason)) or table.get((ANY, finding.reason))
    return declared or _PLAIN_STATUS[finding.status]


def checklist_severity(finding: Finding) -> Severity | None:
    """The severity of a check that is not met or unknown (None for met, pending, n/a). Evidence
    that is missing or unreadable is never a mere item to confirm: unknown is at least a
    warning."""
    status = checklist_status(finding)
    if status is ChecklistStatus.UNKNOWN:
        return max(finding.severity, Severity.WARNING)
    if status is ChecklistStatus.NOT_MET:
        return finding.severity
    return None


def checklist_indicator(finding: Finding) -> str | None:
    """The indicator of a check that is not met or unknown; None for met, pending, n/a."""
    severity = checklist_severity(finding)
    return None if severity is None else severity.indicator


def card_group(finding: Finding) -> CardGroup | None:
    """The card that shows the finding; None when it needs no card (met, not applicable,
    pending, or an INFO item that the checklist alone lists)."""
    severity = checklist_severity(finding)
    if severity is None or severity is Severity.INFO:
        return None
    if severity is Severity.CRITICAL:
        return CardGroup.OWN
    table = GROUP_BY_REASON
    return (
        table.get((finding.topic, finding.reason))
        or table.get((finding.topic, ANY))
        or table.get((ANY, finding.reason))
        or CardGroup.REVIEW
    )
