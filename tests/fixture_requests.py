"""The complete hook requests in fhir_fixtures/requests, as the tests load them."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

REQUESTS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
SERVICE_URL = {
    "order-select": "/cds-services/lemtrada-order-select",
    "order-sign": "/cds-services/lemtrada-order-sign",
    "patient-view": "/cds-services/lemtrada-monitoring",
}
"""The path each hook's request is posted to (patient-view: the monitoring service, whose
requests are under requests/monitoring/)."""
MONITORING_TODAY = date(2026, 11, 30)
"""The day every monitoring fixture is asked on (fhir_fixtures/monitoring_scenarios.json
`today`)."""


def monitoring_cases() -> list[tuple[str, str]]:
    """(fixture name, 'patient-view') for every monitoring request fixture."""
    return [
        (f"monitoring/{path.stem}", "patient-view")
        for path in sorted((REQUESTS / "monitoring").glob("*.json"))
    ]


def fixture_request(name: str) -> dict[str, Any]:
    """A fresh copy of the named request (tests may change it)."""
    doc: dict[str, Any] = json.loads((REQUESTS / f"{name}.json").read_text(encoding="utf-8"))
    return doc
