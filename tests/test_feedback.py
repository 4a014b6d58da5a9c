"""CDS Hooks feedback: validation, durable idempotent storage, 503 on a database outage, the
issued-card audit and the `cds-service feedback-report` command, all on a real SQLite file."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixture_requests import fixture_request as hook_request
from sqlalchemy import create_engine, inspect, text

from cds_service.app import create_app
from cds_service.storage import create_schema

ROOT = Path(__file__).resolve().parents[1]
SELECT = "lemtrada-order-select"
FEEDBACK_URL = f"/cds-services/{SELECT}/feedback"
CARD = "7eadc5a4-02e6-518d-8c59-5d1bfce9c746"
SUGGESTION = "0b8e3c0a-7c1f-4d7e-9a55-1c2b3d4e5f60"
WHEN = "2026-01-12T10:05:31Z"
REASON = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "MEDPREC",
    "display": "medical precaution",
}


def accepted(card: str = CARD, suggestion: str = SUGGESTION) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion}],
        "outcomeTimestamp": WHEN,
    }


def overridden(card: str = CARD, **reason: Any) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": reason,
        "outcomeTimestamp": WHEN,
    }


def db_url(path: Path) -> str:
    return f"sqlite:///{path}"


def rows(url: str, table: str) -> list[dict[str, Any]]:
    """Every row of a table, read through a separate connection (tables exist even if empty)."""
    engine = create_engine(url)
    try:
        create_schema(engine)
        with engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(text(f"SELECT * FROM {table}"))]
    finally:
        engine.dispose()


def issue_cards(client: Any, name: str) -> dict[str, dict[str, Any]]:
    """Call the service with a fixture scenario; its cards by topic code."""
    response = client.post(f"/cds-services/{SELECT}", json=hook_request(name))
    assert response.status_code == 200
    client.application.extensions["cds_audit"].flush()  # the audit is written off the request path
    return {card["source"]["topic"]["code"]: card for card in response.get_json()["cards"]}


VALID = [
    (
        "an accepted card with its suggestion is stored",
        accepted(),
        {"outcome": "accepted", "accepted_suggestions": json.dumps([SUGGESTION])},
    ),
    (
        "an override with a coded reason keeps its display",
        overridden(reason=REASON),
        {
            "outcome": "overridden",
            "override_reason_code": "MEDPREC",
            "override_reason_display": "medical precaution",
            "override_comment": None,
        },
    ),
    (
        "an override with a reason lacking display (as the Sandbox sends) is accepted",
        overridden(reason={"system": REASON["system"], "code": "MEDPREC"}),
        {"override_reason_code": "MEDPREC", "override_reason_display": None},
    ),
    (
        "an override with only a comment is accepted",
        overridden(userComment="patient declined"),
        {"override_reason_code": None, "override_comment": "patient declined"},
    ),
    (
        "an override without any reason is accepted",
        {"card": CARD, "outcome": "overridden", "outcomeTimestamp": WHEN},
        {"override_reason_code": None, "override_comment": None},
    ),
    (
        "a timestamp with an offset and fraction is stored as the same instant in UTC",
        {**accepted(), "outcomeTimestamp": "2026-01-12T11:05:31.250+01:00"},
        {"outcome_timestamp": "2026-01-12T10:05:31.25Z"},
    ),
]


@pytest.mark.parametrize(("name", "item", "stored"), VALID, ids=[v[0] for v in VALID])
def test_valid_feedback_is_stored(
    client: Any, database_url: str, name: str, item: dict[str, Any], stored: dict[str, Any]
) -> None:
    """Valid feedback answers 200 with {} and is stored in the feedback table."""
    response = client.post(FEEDBACK_URL, json={"feedback": [item]})
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {}
    [row] = rows(database_url, "feedback")
    assert row["card_uuid"] == CARD and row["service_id"] == SELECT
    assert {k: row[k] for k in stored} == stored


INVALID = [
    (
        "an outcome other than accepted or overridden",
        {"feedback": [{**accepted(), "outcome": "ignored"}]},
        "$.feedback[0].outcome",
    ),
    (
        "accepted without acceptedSuggestions",
        {"feedback": [{"card": CARD, "outcome": "accepted", "outcomeTimestamp": WHEN}]},
        "$.feedback[0].acceptedSuggestions",
    ),
    (
        "accepted with an empty acceptedSuggestions list",
        {"feedback": [{**accepted(), "acceptedSuggestions": []}]},
        "$.feedback[0].acceptedSuggestions",
    ),
    (
        "an accepted suggestion id that is not a uuid",
        {"feedback": [accepted(suggestion="suggestion-1")]},
        "$.feedback[0].acceptedSuggestions[0].id",
    ),
    ("an empty overrideReason", {"feedback": [overridden()]}, "$.feedback[0].overrideReason"),
    (
        "an overrideReason with only an empty comment",
        {"feedback": [overridden(userComment="")]},
        "$.feedback[0].overrideReason",
    ),
    (
        "a reason Coding without a code",
        {"feedback": [overridden(reason={"system": REASON["system"]})]},
        "$.feedback[0].overrideReason.reason.code",
    ),
    ("a card that is not a uuid", {"feedback": [accepted(card="card-1")]}, "$.feedback[0].card"),
    (
        "a missing outcomeTimestamp",
        {"feedback": [{k: v for k, v in accepted().items() if k != "outcomeTimestamp"}]},
        "$.feedback[0].outcomeTimestamp",
    ),
    (
        "an outcomeTimestamp without a time zone",
        {"feedback": [{**accepted(), "outcomeTimestamp": "2026-01-12T10:05:31"}]},
        "$.feedback[0].outcomeTimestamp",
    ),
    (
        "an outcomeTimestamp that is not a real date",
        {"feedback": [{**accepted(), "outcomeTimestamp": "2026-02-30T10:05:31Z"}]},
        "$.feedback[0].outcomeTimestamp",
    ),
    ("feedback that is not a list", {"feedback": accepted()}, "$.feedback"),
    ("an empty feedback list", {"feedback": []}, "$.feedback"),
    ("a body without feedback", {"cards": []}, "$.feedback"),
    ("a body that is a list", [accepted()], "$"),
]


@pytest.mark.parametrize(("name", "body", "path"), INVALID, ids=[v[0] for v in INVALID])
def test_invalid_feedback_is_refused_naming_the_path(
    client: Any, database_url: str, name: str, body: Any, path: str
) -> None:
    """Invalid feedback gets a 400 OperationOutcome naming the JSON path, and nothing is stored."""
    response = client.post(FEEDBACK_URL, json=body)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert path in issue["expression"]
    assert path in issue["diagnostics"]
    assert rows(database_url, "feedback") == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff\xfe"],
    ids=["broken JSON", "an empty body", "bytes that are not UTF-8"],
)
def test_a_body_that_is_not_json_is_a_400(client: Any, body: bytes) -> None:
    """A body that is not JSON is a 400 OperationOutcome, not a 500."""
    response = client.post(FEEDBACK_URL, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_feedback_for_an_unknown_service_is_a_404(client: Any) -> None:
    """Feedback posted to a service id that does not exist is a 404 OperationOutcome."""
    response = client.post(
        "/cds-services/no-such-service/feedback", json={"feedback": [accepted()]}
    )
    assert response.status_code == 404
    assert response.get_json()["issue"][0]["code"] == "not-found"


def test_a_repeated_identical_post_is_stored_once(client: Any, database_url: str) -> None:
    """The EHR retrying the same post (or repeating an item in it) does not double-count."""
    body = {"feedback": [accepted(), overridden(reason=REASON), accepted()]}
    for _ in range(3):
        assert client.post(FEEDBACK_URL, json=body).status_code == 200
    stored = sorted(r["outcome"] for r in rows(database_url, "feedback"))
    assert stored == ["accepted", "overridden"]


def test_the_same_card_can_receive_feedback_twice_with_different_outcomes(
    client: Any, database_url: str
) -> None:
    """Two different feedback items for one card (spec: allowed) are both kept."""
    client.post(FEEDBACK_URL, json={"feedback": [overridden(userComment="later")]})
    client.post(FEEDBACK_URL, json={"feedback": [accepted()]})
    assert len(rows(database_url, "feedback")) == 2


def test_one_bad_item_in_a_batch_stores_none(client: Any, database_url: str) -> None:
    """All or nothing: one invalid item among three is a 400 naming it, and none are stored."""
    body = {"feedback": [accepted(), {**accepted(), "card": "nope"}, overridden(reason=REASON)]}
    response = client.post(FEEDBACK_URL, json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["$.feedback[1].card"]
    assert rows(database_url, "feedback") == []


def test_unreachable_database_is_503_and_a_retry_succeeds(tmp_path: Path) -> None:
    """Database down -> 503 transient (the EHR retries); once it is back the same post is stored."""
    blocker = tmp_path / "mount"
    blocker.write_text("a file where the database folder should be")
    url = db_url(blocker / "db.sqlite3")
    app = create_app(testing=True, database_url=url)
    client = app.test_client()
    body = {"feedback": [accepted()]}
    response = client.post(FEEDBACK_URL, json=body)
    assert response.status_code == 503
    assert response.get_json()["issue"][0]["code"] == "transient"
    blocker.unlink()
    blocker.mkdir()
    response = client.post(FEEDBACK_URL, json=body)
    assert response.status_code == 200
    assert len(rows(url, "feedback")) == 1
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


@pytest.mark.slow
def test_locked_database_is_503_and_a_retry_succeeds(
    client: Any, database_url: str, tmp_path: Path
) -> None:
    """Another writer holding the SQLite lock past the busy timeout -> 503, then a retry works."""
    assert (
        client.post(FEEDBACK_URL, json={"feedback": [overridden(userComment="x")]}).status_code
        == 200
    )
    holder = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        response = client.post(FEEDBACK_URL, json={"feedback": [accepted()]})
        assert response.status_code == 503
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.post(FEEDBACK_URL, json={"feedback": [accepted()]}).status_code == 200
    assert len(rows(database_url, "feedback")) == 2


def test_issued_cards_are_audited_without_patient_data(client: Any, database_url: str) -> None:
    """Each issued card is recorded by uuid, service, topic, indicator, hookInstance and time
    only."""
    request = hook_request("hiv_test_positive")
    cards = issue_cards(client, "hiv_test_positive")
    audit = rows(database_url, "issued_cards")
    assert {(r["card_uuid"], r["topic"], r["indicator"]) for r in audit} == {
        (c["uuid"], topic, c["indicator"]) for topic, c in cards.items()
    }
    assert {r["hook_instance"] for r in audit} == {request["hookInstance"]}
    engine = create_engine(database_url)
    columns = {c["name"] for c in inspect(engine).get_columns("issued_cards")}
    engine.dispose()
    assert columns == {
        "card_uuid",
        "service_id",
        "topic",
        "indicator",
        "hook_instance",
        "issued_at",
    }
    patient = request["context"]["patientId"]
    assert not any(patient in str(value) for r in audit for value in r.values())


def test_the_same_hook_instance_is_audited_once(client: Any, database_url: str) -> None:
    """The EHR repeating a hook call (same hookInstance, same card uuids) records each card once."""
    issue_cards(client, "hiv_test_positive")
    issue_cards(client, "hiv_test_positive")
    assert len(rows(database_url, "issued_cards")) == 2


def test_hook_call_still_answers_when_the_audit_database_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An audit failure never fails the hook call: the cards come back and a warning is logged."""
    blocker = tmp_path / "mount"
    blocker.write_text("")
    app = create_app(testing=True, database_url=db_url(blocker / "db.sqlite3"))
    with caplog.at_level(logging.WARNING, logger="cds_service.feedback"):
        cards = issue_cards(app.test_client(), "hiv_test_positive")
    assert "hiv-screening" in cards
    assert any("issued-card audit dropped" in r.getMessage() for r in caplog.records)
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


def run_report(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "feedback-report", "--database-url", url, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_feedback_report_counts_per_topic(client: Any, database_url: str) -> None:
    """After two scenarios and their feedback, the report counts issued/accepted/overridden per
    card topic, and per check the suggestions offered and taken (the work-up card's TB order)."""
    tb = issue_cards(client, "tb_screening_missing")
    hiv = issue_cards(client, "hiv_test_positive")
    tb_card = tb["pretreatment-workup"]
    body = {
        "feedback": [
            accepted(tb_card["uuid"], tb_card["suggestions"][0]["uuid"]),
            overridden(hiv["hiv-screening"]["uuid"], reason=REASON),
            overridden(hiv["hiv-screening"]["uuid"], reason=REASON, userComment="seen by ID"),
            overridden(tb["eligibility-summary"]["uuid"], userComment="discussed with neurologist"),
            overridden("00000000-0000-4000-8000-000000000000", reason={"system": "s", "code": "x"}),
        ]
    }
    assert client.post(FEEDBACK_URL, json=body).status_code == 200

    result = run_report(database_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    topics = {t["topic"]: t for t in report["topics"]}
    assert report["checks"] == [
        {"check": "tb-screening", "suggestionsOffered": 1, "suggestionsTaken": 1}
    ]
    assert topics["pretreatment-workup"] == {
        "topic": "pretreatment-workup",
        "issued": 1,
        "accepted": 1,
        "overridden": 0,
        "overrideReasons": {},
        "comments": 0,
    }
    assert topics["hiv-screening"] == {
        "topic": "hiv-screening",
        "issued": 1,
        "accepted": 0,
        "overridden": 2,
        "overrideReasons": {"MEDPREC (medical precaution)": 2},
        "comments": 1,
    }
    assert topics["eligibility-summary"] == {
        "topic": "eligibility-summary",
        "issued": 2,
        "accepted": 0,
        "overridden": 1,
        "overrideReasons": {},
        "comments": 1,
    }
    assert topics["(unknown card)"] == {
        "topic": "(unknown card)",
        "issued": 0,
        "accepted": 0,
        "overridden": 1,
        "overrideReasons": {"x": 1},
        "comments": 0,
    }

    table = run_report(database_url)
    assert table.returncode == 0, table.stderr
    cells = [line.split() for line in table.stdout.splitlines()]
    assert cells[0] == ["topic", "issued", "accepted", "overridden", "comments"]
    assert ["hiv-screening", "1", "0", "2", "1"] in cells
    assert ["pretreatment-workup", "1", "1", "0", "0"] in cells
    assert ["tb-screening", "1", "1"] in cells
    assert ["(unknown", "card)", "0", "0", "1", "0"] in cells
    assert "override reason MEDPREC (medical precaution): 2" in table.stdout


@pytest.mark.slow
def test_feedback_report_on_an_unreachable_database_fails_clearly(tmp_path: Path) -> None:
    """The report says it cannot read the database and exits non-zero (no traceback)."""
    blocker = tmp_path / "mount"
    blocker.write_text("")
    result = run_report(db_url(blocker / "db.sqlite3"))
    assert result.returncode == 1
    assert "cannot read the database" in result.stderr
    assert "Traceback" not in result.stderr
