"""The README's example is what the service really answers."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

from cds_service.app import create_app
from cds_service.auth import REASON_MEANINGS, REASONS
from cds_service.docs_gen import REASONS_END, REASONS_START, readme_with_refusal_reasons

ROOT = Path(__file__).resolve().parent.parent


def test_readme_curl_example_shows_the_real_cards() -> None:
    """The lines printed under the README's curl are the cards the service returns for that
    fixture."""
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- readme-curl-output -->\n```\n(.*?)```", readme, re.S)
    assert shown is not None
    fixture = re.search(r"--data @(fhir_fixtures/requests/\S+\.json)", readme)
    assert fixture is not None
    cards = (
        create_app(testing=True)
        .test_client()
        .post(
            "/cds-services/lemtrada-order-select",
            json=json.loads((ROOT / fixture.group(1)).read_text()),
        )
        .get_json()["cards"]
    )
    actual = "".join(
        f"{c['indicator']} {c['source']['topic']['code']} - {c['summary']}\n" for c in cards
    )
    assert shown.group(1) == actual


def test_readme_lists_every_refusal_reason_as_generated_from_the_code() -> None:
    """The table of refusal reasons is what `make docs` generates from cds_service.auth: one row
    per label a refused token can be logged and counted with."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == readme_with_refusal_reasons(readme), "stale: run `make docs`"
    table = readme.split(REASONS_START)[1].split(REASONS_END)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(REASONS)


def test_every_refusal_reason_is_explained() -> None:
    """A new reason in REASONS needs its meaning (and the other way round), in the same order."""
    assert tuple(REASON_MEANINGS) == REASONS
    assert all(meaning.strip() for meaning in REASON_MEANINGS.values())


def test_readme_trusts_the_public_sandbox_only_with_its_warning() -> None:
    """The production example does not trust the sandbox issuer; where the README does, it says
    first that its private key is public and that it is for testing only."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [
        (readme[: m.start()], m.group(1)) for m in re.finditer(r"(?s)```json\n(.*?)```", readme)
    ]
    trusting = [
        before for before, block in blocks if '"iss": "https://sandbox.cds-hooks.org"' in block
    ]
    assert trusting, "the README shows how to trust the sandbox for testing"
    for before in trusting:
        said = " ".join(before.split()[-70:])  # the paragraph just before the example
        assert "is for testing only" in said
        assert "private half is published" in said
    assert any(
        '"iss": "https://ehr.hospital.example"' in block and "sandbox" not in block
        for _, block in blocks
    )


def test_readme_monitoring_curl_example_shows_the_real_cards() -> None:
    """The lines printed under the README's monitoring curl are the cards lemtrada-monitoring
    returns for that patient-view fixture on the day the example is asked."""
    from unittest import mock

    from cds_service.docs_gen import MONITORING_EXAMPLE_DAY

    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- readme-monitoring-curl-output -->\n```\n(.*?)```", readme, re.S)
    assert shown is not None
    fixture = re.search(r"--data @(fhir_fixtures/requests/monitoring/\S+\.json)", readme)
    assert fixture is not None
    day = date.fromisoformat(MONITORING_EXAMPLE_DAY)
    with mock.patch("cds_service.http_api.today", return_value=day):
        cards = (
            create_app(testing=True)
            .test_client()
            .post(
                "/cds-services/lemtrada-monitoring",
                json=json.loads((ROOT / fixture.group(1)).read_text()),
            )
            .get_json()["cards"]
        )
    actual = "".join(
        f"{c['indicator']} {c['source']['topic']['code']} - {c['summary']}\n" for c in cards
    )
    assert shown.group(1) == actual
    assert "monitoring-summary" in actual


def test_readme_lists_the_monitoring_checks_as_generated() -> None:
    """The README's monitoring topic table is what `make docs` generates from MONITORING_RULES."""
    from cds_service.docs_gen import (
        MONITORING_TOPICS_END,
        MONITORING_TOPICS_START,
        render_monitoring_topic_table,
    )
    from cds_service.domain.rules.monitoring import MONITORING_RULES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split(MONITORING_TOPICS_START)[1].split(MONITORING_TOPICS_END)[0]
    assert table.strip() == render_monitoring_topic_table().strip()
    rows = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert rows == [rule.topic for rule in MONITORING_RULES] + ["monitoring-summary"]
