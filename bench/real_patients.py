"""Cards and response size per real-data patient at order-select (issue 14's baseline).

Every patient of tests/real_patients.py (Synthea R4, Synthea bulk, US Core examples) is sent the
order-select request of the real-data test (Lemtrada first course on the dataset's T0, prefetch
answered from the patient's records); this prints, per patient, the number of cards, the cards'
topics and indicators, and the response body size in bytes, then mean/min/max over all patients.

    .venv/bin/python bench/real_patients.py

A measurement, not a test: nothing here asserts a number.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout, not an installed copy

from real_patients import (  # noqa: E402
    SERVICE_PATH,
    discovery_templates,
    order_select_request,
    patients,
)

from cds_service.app import create_app  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(testing=True, database_url=f"sqlite:///{folder}/bench.sqlite3")
        client = app.test_client()
        templates = discovery_templates(client.get("/cds-services").get_json())
        rows: list[tuple[str, int, int, str]] = []
        for patient in patients():
            response = client.post(SERVICE_PATH, json=order_select_request(patient, templates))
            body = response.get_json()
            cards = body["cards"]
            marks = " ".join(
                f"{card['source']['topic']['code']}:{card['indicator'][0]}" for card in cards
            )
            rows.append((patient.key, len(cards), len(response.get_data()), marks))
        app.extensions["cds_db"].dispose()
    print(f"{'patient':30} {'cards':>5} {'bytes':>7}  topics (indicator: c/w/i)")
    for key, count, size, marks in rows:
        print(f"{key:30} {count:5} {size:7}  {marks}")
    counts = [count for _, count, _, _ in rows]
    sizes = [size for _, _, size, _ in rows]
    print()
    print(f"patients: {len(rows)}")
    print(
        f"cards per patient: mean {statistics.mean(counts):.2f}, "
        f"min {min(counts)}, max {max(counts)}"
    )
    print(f"response bytes: mean {statistics.mean(sizes):.0f}, max {max(sizes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
