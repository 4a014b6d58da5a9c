"""The Rule record: one check with its topic, source, value sets, numbers and override reasons.

Each check module declares a Rule right below its check function; rules/__init__.py lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..findings import Finding
from ..orders import OrderContext
from ..policy import Policy
from ..record import PatientRecord

Check = Callable[[PatientRecord, OrderContext, Policy], Finding]
BOTH_HOOKS = frozenset({"order-select", "order-sign"})
ORDER_SIGN = frozenset({"order-sign"})


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
    check: Check
    value_sets: tuple[str, ...] = ()
    """Ids of the value sets the check reads (terminology/valuesets), for the docs."""
    policy_keys: tuple[str, ...] = ()
    override_reasons: tuple[str, ...] = ()
    """Codes of the CDS Hooks non-adherence-reason vocabulary offered when overriding."""
    hooks: frozenset[str] = BOTH_HOOKS

    def titled(self, policy: Policy) -> str:
        """The title with its policy numbers filled in."""
        return self.title.format_map(policy.placeholders())
