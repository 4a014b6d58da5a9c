"""The README's example is what the service really answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cds_service.app import create_app

ROOT = Path(__file__).resolve().parent.parent


def test_readme_curl_example_shows_the_real_cards() -> None:
    """The lines printed under the README's curl are the cards the service returns for that
    fixture."""
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- readme-curl-output -->\n```\n(.*?)```", readme, re.S)
    assert shown is not None
    fixture = re.search(r"--data @(fhir_fixtures/requests/\S+\.json)", readme)
    assert fixture is not None
    cards = create_app(testing=True).test_client().post(
        "/cds-services/lemtrada-order-select",
        json=json.loads((ROOT / fixture.group(1)).read_text())).get_json()["cards"]
    actual = "".join(f'{c["indicator"]} {c["source"]["topic"]["code"]} - {c["summary"]}\n'
                     for c in cards)
    assert shown.group(1) == actual
