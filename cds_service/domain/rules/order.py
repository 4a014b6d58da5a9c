"""Checks of the order itself: course interval, dose, premedication, prophylaxis (issue #4)."""

from __future__ import annotations

from .base import Rule

ORDER_RULES: tuple[Rule, ...] = ()
