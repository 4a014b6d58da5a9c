"""Contraindications, indication, screening and warnings from the rest of the label (issue #4)."""

from __future__ import annotations

from .base import Rule

LABEL_RULES: tuple[Rule, ...] = ()
