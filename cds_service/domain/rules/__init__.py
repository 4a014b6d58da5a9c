"""The rule table: every check, once, with its topic, source and the numbers it uses.

Discovery text, the cards' citations and docs/clinical-rules.md are all generated from this
table and policy.toml, so they cannot drift apart. Order matters: within one indicator, cards
appear in table order.
"""

from __future__ import annotations

from .base import BOTH_HOOKS, ORDER_SIGN, Check, Rule
from .core import CORE_RULES
from .label import LABEL_RULES
from .order import ORDER_RULES

RULES: tuple[Rule, ...] = CORE_RULES + LABEL_RULES + ORDER_RULES
RULES_BY_TOPIC = {rule.topic: rule for rule in RULES}
if len(RULES_BY_TOPIC) != len(RULES):  # pragma: no cover - guards the one-card-per-topic contract
    raise RuntimeError("two rules share a topic")

__all__ = ["BOTH_HOOKS", "ORDER_SIGN", "Check", "Rule", "RULES", "RULES_BY_TOPIC"]
