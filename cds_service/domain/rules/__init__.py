"""The rule table: every check, in the order its cards appear.

Each check is declared once, as a Rule right below its function in the module of its clinical
subject (topic, title, citation, value sets, policy keys, override reasons, hooks). Discovery text,
the cards' citations, docs/clinical-rules.md, the README's topic table and the terminology README's
value-set section are all generated from this table and policy.toml, so they cannot drift apart.
Order matters: within one indicator, cards appear in table order.
"""

from __future__ import annotations

from .base import BOTH_HOOKS, ORDER_SIGN, Check, Rule
from .baseline import BASELINE_LABS_RULE
from .conditions import MALIGNANCY_RULE, THYROID_DISORDER_RULE
from .contraindications import ACTIVE_INFECTION_RULE, HYPERSENSITIVITY_RULE
from .deceased import DECEASED_RULE
from .dmt import PRIOR_DMT_RULE
from .indication import AGE_RULE, INDICATION_RULE
from .medications import CONCURRENT_IMMUNOSUPPRESSION_RULE, PRIOR_CAMPATH_RULE
from .monitoring import LATER_COURSE_AUTOIMMUNE_RULE, MONITORING_OVERDUE_RULE
from .order import COURSE_INTERVAL_RULE, DOSE_RULE, HERPES_PROPHYLAXIS_RULE, PREMEDICATION_RULE
from .pregnancy import PREGNANCY_RULE
from .screening import (
    HBV_SCREENING_RULE,
    HCV_SCREENING_RULE,
    HIV_SCREENING_RULE,
    TB_SCREENING_RULE,
)
from .unassessed import UNASSESSED_CONDITIONS_RULE
from .vaccines import LIVE_VACCINE_GAP_RULE, NON_LIVE_VACCINE_GAP_RULE
from .vzv import VZV_IMMUNITY_RULE

RULES: tuple[Rule, ...] = (
    DECEASED_RULE,
    LIVE_VACCINE_GAP_RULE,
    VZV_IMMUNITY_RULE,
    PRIOR_DMT_RULE,
    TB_SCREENING_RULE,
    HIV_SCREENING_RULE,
    HCV_SCREENING_RULE,
    HYPERSENSITIVITY_RULE,
    ACTIVE_INFECTION_RULE,
    PREGNANCY_RULE,
    INDICATION_RULE,
    AGE_RULE,
    BASELINE_LABS_RULE,
    HBV_SCREENING_RULE,
    NON_LIVE_VACCINE_GAP_RULE,
    PRIOR_CAMPATH_RULE,
    CONCURRENT_IMMUNOSUPPRESSION_RULE,
    THYROID_DISORDER_RULE,
    MALIGNANCY_RULE,
    UNASSESSED_CONDITIONS_RULE,
    COURSE_INTERVAL_RULE,
    LATER_COURSE_AUTOIMMUNE_RULE,
    MONITORING_OVERDUE_RULE,
    DOSE_RULE,
    PREMEDICATION_RULE,
    HERPES_PROPHYLAXIS_RULE,
)
RULES_BY_TOPIC = {rule.topic: rule for rule in RULES}
if len(RULES_BY_TOPIC) != len(RULES):  # pragma: no cover - guards the one-card-per-topic contract
    raise RuntimeError("two rules share a topic")

__all__ = ["BOTH_HOOKS", "ORDER_SIGN", "Check", "Rule", "RULES", "RULES_BY_TOPIC"]
