"""Bounded inputs (issue 11, item 5): a hookInstance is logged with every call and stored with
every issued card, so one longer than 128 characters or outside printable ASCII is a 400; a short
one that is not a UUID is answered and counted. Feedback strings have documented limits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixture_requests import fixture_request
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from cds_service.app import create_app

SELECT = "/cds-services/lemtrada-order-select"
FEEDBACK = f"{SELECT}/feedback"
CARD = "7eadc5a4-02e6-518d-8c59-5d1bfce9c746"
UUID = "d8b1c3a2-5e4f-4a6b-9c7d-0e1f2a3b4c5d"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    app = create_app(testing=True, database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    yield app
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


def not_uuid_count() -> float:
    return REGISTRY.get_sample_value("cds_hook_instance_not_uuid_total") or 0.0


def stored_hook_instances(app: Any) -> list[str]:
    app.extensions["cds_audit"].flush()
    engine = create_engine(app.extensions["cds_settings"].database_url)
    try:
        with engine.connect() as connection:
            return [
                row[0] for row in connection.execute(text("SELECT hook_instance FROM issued_cards"))
            ]
    except Exception:  # no table yet: nothing was ever stored
        return []
    finally:
        engine.dispose()


HOOK_INSTANCES = [
    ("a UUID is answered and not counted", UUID, 200, 0),
    ("a short value that is not a UUID is answered and counted", "epic-12345", 200, 1),
    ("128 printable characters are answered and counted", "h" * 128, 200, 1),
    ("an upper-case UUID is a UUID", UUID.upper(), 200, 0),
    ("129 characters are refused", "h" * 129, 400, 0),
    ("a line break is refused", "abc\ndef", 400, 0),
    ("a NUL character is refused", "abc\x00", 400, 0),
    ("a non-ASCII letter is refused", "hook-é", 400, 0),
    ("a UUID followed by a line break is refused", UUID + "\n", 400, 0),
]


@pytest.mark.parametrize(
    ("case", "value", "status", "counted"), HOOK_INSTANCES, ids=[c[0] for c in HOOK_INSTANCES]
)
def test_hook_instance_is_bounded(
    app: Any, case: str, value: str, status: int, counted: int
) -> None:
    """Within bounds: the same cards, stored with the hookInstance; beyond: a 400 naming the
    field, nothing stored."""
    request = fixture_request("eligible_patient_at_order_select")
    before = not_uuid_count()
    response = app.test_client().post(SELECT, json={**request, "hookInstance": value})
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert not_uuid_count() - before == counted
    if status == 400:
        issue = response.get_json()["issue"][0]
        assert issue["expression"] == ["hookInstance"]
        assert stored_hook_instances(app) == []
    else:
        assert response.get_json()["cards"]
        assert set(stored_hook_instances(app)) == {value}


def test_a_4_mib_hook_instance_is_a_400_and_is_neither_stored_nor_logged(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack that added 40 MiB of database and 4 MiB of log per call: now a short 400, no
    row, and no log line holding more than a few dozen of its characters."""
    caplog.set_level(logging.DEBUG)
    huge = "x" * (4 * 1024 * 1024)
    request = {**fixture_request("eligible_patient_at_order_select"), "hookInstance": huge}
    response = app.test_client().post(SELECT, json=request)
    assert response.status_code == 400
    assert len(response.get_data()) < 1000
    assert "xxxxxxxxxx" not in response.get_data(as_text=True)
    assert stored_hook_instances(app) == []
    logged = [f"{record.getMessage()} {record.__dict__}" for record in caplog.records]
    assert logged, "the refused call is logged"
    assert all("x" * 64 not in line for line in logged)


def feedback_item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": CARD,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-01-12T10:05:31Z",
        "overrideReason": {
            "reason": {
                "system": "http://example.org/reasons",
                "code": "MEDPREC",
                "display": "medical precaution",
            },
            "userComment": "seen",
        },
    }
    item.update(changes)
    return item


def reason(**changes: Any) -> dict[str, Any]:
    coding = {"system": "http://example.org/reasons", "code": "MEDPREC", **changes}
    return {"reason": coding}


FEEDBACK_LIMITS = [
    (
        "a comment of 10,000 characters is stored",
        feedback_item(overrideReason={"userComment": "c" * 10_000}),
        200,
        "",
    ),
    (
        "a comment of 10,001 characters is refused",
        feedback_item(overrideReason={"userComment": "c" * 10_001}),
        400,
        "$.feedback[0].overrideReason.userComment",
    ),
    (
        "a reason display of 10,000 characters is stored",
        feedback_item(overrideReason=reason(display="d" * 10_000)),
        200,
        "",
    ),
    (
        "a reason display of 10,001 characters is refused",
        feedback_item(overrideReason=reason(display="d" * 10_001)),
        400,
        "$.feedback[0].overrideReason.reason.display",
    ),
    (
        "a reason code of 1,025 characters is refused",
        feedback_item(overrideReason=reason(code="c" * 1025)),
        400,
        "$.feedback[0].overrideReason.reason.code",
    ),
    (
        "a reason system of 1,025 characters is refused",
        feedback_item(overrideReason=reason(system="s" * 1025)),
        400,
        "$.feedback[0].overrideReason.reason.system",
    ),
    (
        "100 accepted suggestions are stored",
        feedback_item(
            outcome="accepted", overrideReason=None, acceptedSuggestions=[{"id": UUID}] * 100
        ),
        200,
        "",
    ),
    (
        "101 accepted suggestions are refused",
        feedback_item(
            outcome="accepted", overrideReason=None, acceptedSuggestions=[{"id": UUID}] * 101
        ),
        400,
        "$.feedback[0].acceptedSuggestions",
    ),
    (
        "a card uuid with a trailing line break is refused",
        feedback_item(card=CARD + "\n"),
        400,
        "$.feedback[0].card",
    ),
    (
        "a timestamp of 129 characters is refused",
        feedback_item(outcomeTimestamp="2026-01-12T10:05:31." + "1" * 108 + "Z"),
        400,
        "$.feedback[0].outcomeTimestamp",
    ),
]


@pytest.mark.parametrize(
    ("case", "item", "status", "path"), FEEDBACK_LIMITS, ids=[c[0] for c in FEEDBACK_LIMITS]
)
def test_feedback_strings_are_bounded(
    app: Any, case: str, item: dict[str, Any], status: int, path: str
) -> None:
    """Up to each documented limit feedback is stored; beyond it a 400 names the JSON path."""
    item = {k: v for k, v in item.items() if v is not None}
    response = app.test_client().post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    if status == 400:
        assert path in response.get_json()["issue"][0]["expression"]


@pytest.mark.slow
def test_a_post_of_1001_items_is_refused_and_1000_are_stored(app: Any) -> None:
    """At most 1,000 items per post (an EHR sends one per card)."""
    client = app.test_client()
    items = [feedback_item(overrideReason={"userComment": f"comment {n}"}) for n in range(1001)]
    response = client.post(FEEDBACK, json={"feedback": items})
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["$.feedback"]
    assert client.post(FEEDBACK, json={"feedback": items[:1000]}).status_code == 200
