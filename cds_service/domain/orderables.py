"""What the service may suggest ordering, read once from terminology/orderables.json.

The LOINC code of each suggested test, the RxNorm code of each suggested medication and the
SNOMED CT route and category codes live in that data file, not in rule code, so a terminologist
reviews them in one place.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from .fhirdata import Code

GROUPS = ("labTests", "medications", "routes", "categories")


@cache
def _codings() -> dict[str, dict[str, str]]:
    text = (resources.files("cds_service") / "terminology" / "orderables.json").read_text(
        encoding="utf-8"
    )
    doc = json.loads(text)
    out: dict[str, dict[str, str]] = {}
    for group in GROUPS:
        for entry in doc[group]:
            if entry["key"] in out:
                raise ValueError(f"orderables.json: key {entry['key']} is listed twice")
            out[entry["key"]] = dict(entry["coding"])
    return out


def coding(key: str) -> dict[str, str]:
    """The FHIR Coding (system, code, display) of an orderable, a route or a category."""
    return dict(_codings()[key])


@cache
def _names() -> dict[str, str]:
    doc = json.loads(
        (resources.files("cds_service") / "terminology" / "orderables.json").read_text(
            encoding="utf-8"
        )
    )
    return {
        entry["key"]: entry["name"] for group in GROUPS for entry in doc[group] if "name" in entry
    }


def name(key: str) -> str:
    """The short name a card uses for an orderable (its `name` in orderables.json)."""
    return _names()[key]


def code(key: str) -> Code:
    """(system, code) of an orderable, as value sets and suggestions hold codes."""
    found = _codings()[key]
    return (found["system"], found["code"])
