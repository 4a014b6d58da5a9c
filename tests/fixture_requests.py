"""The complete hook requests in fhir_fixtures/requests, as the tests load them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REQUESTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
SERVICE_URL = {
    "order-select": "/cds-services/lemtrada-order-select",
    "order-sign": "/cds-services/lemtrada-order-sign",
}
"""The path each order hook's request is posted to."""


def fixture_request(name: str) -> dict[str, Any]:
    """A fresh copy of the named request (tests may change it)."""
    doc: dict[str, Any] = json.loads((REQUESTS / f"{name}.json").read_text(encoding="utf-8"))
    return doc
