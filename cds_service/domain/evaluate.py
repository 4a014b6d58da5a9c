"""Run every rule for an order: the pure core that the HTTP layer and the CLI both call."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .findings import Finding, Severity, Status
from .orders import OrderContext
from .policy import Policy
from .record import PatientRecord
from .rules import RULES, Rule

if TYPE_CHECKING:
    from .monitoring import MonitoringContext

log = logging.getLogger(__name__)


def guarded(
    rule: Rule, record: PatientRecord, context: OrderContext | MonitoringContext, policy: Policy
) -> Finding:
    """Run one rule (an order rule with the order, a monitoring rule with the monitoring
    context); a rule that cannot read the data answers 'unknown', never an all-clear."""
    try:
        finding = rule.check(record, context, policy)
        if finding.topic != rule.topic:  # a card must carry the topic of the rule that made it
            raise ValueError(f"rule {rule.topic} returned a finding of topic {finding.topic}")
        if not finding.reason:  # its sentences live in wording.toml under (topic, reason)
            raise ValueError(f"rule {rule.topic} returned a finding without a reason code")
    except Exception:  # a crashing rule must surface as unknown, not as a 500
        log.exception("rule %s failed", rule.topic)
        return Finding(
            rule.topic,
            Status.UNKNOWN,
            Severity.WARNING,
            reason="not-evaluated",
            facts={"title": rule.titled(policy)},
        )
    if finding.status is Status.MET and finding.unreadable:
        # Unreadable evidence might contradict what was read: never an all-clear.
        return Finding(
            finding.topic,
            Status.UNKNOWN,
            Severity.WARNING,
            evidence=finding.evidence,
            unreadable=finding.unreadable,
            suggestions=finding.suggestions,
            reason="met-but-unreadable",
            facts={"title": rule.titled(policy), "unreadable": len(finding.unreadable)},
        )
    return finding


_guarded = guarded


Checked = tuple[Rule, Finding]
"""A rule and its finding: cards take the pair, so they never look a rule up by topic."""


def evaluate(record: PatientRecord, order: OrderContext, policy: Policy) -> list[Checked]:
    """Every rule that applies to this hook with its finding, in rule-table order."""
    return [
        (rule, _guarded(rule, record, order, policy)) for rule in RULES if order.hook in rule.hooks
    ]
