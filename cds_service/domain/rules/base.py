"""The Rule record: one check with its topic, source, value sets, numbers and override reasons.

Each check module declares a Rule right below its check function; rules/__init__.py lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..findings import Finding
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord

if TYPE_CHECKING:
    from ..monitoring import MonitoringContext

Check = Callable[[PatientRecord, OrderContext, Policy], Finding]
"""An order check (the order services, domain/evaluate.py)."""
MonitoringCheck = Callable[[PatientRecord, "MonitoringContext", Policy], Finding]
"""A monitoring check (patient-view, domain/rules/monitoring.py): the monitoring context
(infusion history, today) takes the place of the order."""
AnyCheck = Callable[[PatientRecord, Any, Policy], Finding]
"""What a Rule holds: a Check for the order rules (RULES), a MonitoringCheck for the monitoring
rules (MONITORING_RULES); each table's evaluator passes the matching context."""
BOTH_HOOKS = frozenset({"order-select", "order-sign"})
ORDER_SIGN = frozenset({"order-sign"})
PATIENT_VIEW = frozenset({"patient-view"})


@dataclass(frozen=True)
class Rule:
    """One check: what it looks at, how bad a failure is, and where the requirement comes from."""

    topic: str
    title: str
    """A template: policy numbers are named placeholders (`{course_interval}`), see `titled`."""
    logic: str
    indicator: str
    """The indicator(s) a failing check can carry, for the docs."""
    source: str
    """Key of a source in policy.toml: label, rems or local."""
    citation: str
    check: AnyCheck
    value_sets: tuple[str, ...] = ()
    """Ids of the value sets the check reads (terminology/valuesets), for the docs."""
    policy_keys: tuple[str, ...] = ()
    override_reasons: tuple[str, ...] = ()
    """Codes of the CDS Hooks non-adherence-reason vocabulary offered when overriding."""
    hooks: frozenset[str] = BOTH_HOOKS

    def titled(self, policy: Policy) -> str:
        """The title with its policy numbers filled in."""
        return self.title.format_map(policy.placeholders())
