"""Bounded storage (issue 11, item 5): issued-card rows and feedback are kept for their retention,
seen JWT ids until their token has expired; `cds-service prune` and the automatic pruner remove
the rest. Every case runs on a SQLite file and on a real PostgreSQL server (the fixtures of
tests/test_postgres_storage.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import test_postgres_storage as storage_tests
from fixture_requests import fixture_request
from jwt_keys import claims, ec_key, jwks
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.engine import make_url

from cds_service.app import create_app
from cds_service.auth import LEEWAY_SECONDS, DatabaseJtiStore, Verifier, parse_trusted_issuers
from cds_service.config import Settings
from cds_service.retention import BATCH_ROWS, Pruner, prune
from cds_service.storage import Database, create_schema, feedback, issued_cards, seen_jti

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
SELECT = "lemtrada-order-select"
ISS = "https://ehr.example.org"
BASE = "https://cds.example.org"
DAY = timedelta(days=1)

# The storage tests' fixtures: a SQLite file, and a database on a real PostgreSQL server.
postgres = storage_tests.postgres
url = storage_tests.url
database = storage_tests.database
count = storage_tests.count


def add_issued(db: Database, *ages: timedelta) -> None:
    with db.begin() as connection:
        connection.execute(
            insert(issued_cards),
            [
                {
                    "card_uuid": f"00000000-0000-4000-8000-{n:012d}",
                    "service_id": SELECT,
                    "topic": "hiv-screening",
                    "indicator": "critical",
                    "hook_instance": f"hook-{n}",
                    "issued_at": NOW - age,
                }
                for n, age in enumerate(ages)
            ],
        )


def add_feedback(db: Database, *ages: timedelta) -> None:
    with db.begin() as connection:
        connection.execute(
            insert(feedback),
            [
                {
                    "fingerprint": f"{n:064d}",
                    "service_id": SELECT,
                    "card_uuid": f"00000000-0000-4000-8000-{n:012d}",
                    "outcome": "overridden",
                    "override_comment": "typed by a clinician",
                    "outcome_timestamp": "2026-01-12T10:05:31Z",
                    "received_at": NOW - age,
                }
                for n, age in enumerate(ages)
            ],
        )


def add_jti(db: Database, *expires_in: timedelta) -> None:
    with db.begin() as connection:
        connection.execute(
            insert(seen_jti),
            [
                {"iss": ISS, "jti": f"jti-{n}", "expires_at": NOW + delta}
                for n, delta in enumerate(expires_in)
            ],
        )


RETENTION = [
    (
        "rows older than 400 days go, younger ones stay",
        400,
        400,
        [401 * DAY, 399 * DAY, DAY],
        [401 * DAY, 10 * DAY],
        (2, 1),
    ),
    (
        "a shorter retention for feedback than for the audit",
        400,
        30,
        [31 * DAY],
        [31 * DAY, 29 * DAY],
        (1, 1),
    ),
    ("retention 0 keeps everything forever", 0, 0, [4000 * DAY], [4000 * DAY], (1, 1)),
    ("nothing to prune on a fresh database", 400, 400, [], [], (0, 0)),
]


@pytest.mark.parametrize(
    ("case", "audit_days", "feedback_days", "issued", "posted", "left"),
    RETENTION,
    ids=[c[0] for c in RETENTION],
)
def test_prune_keeps_rows_for_their_retention_on_every_backend(
    url: str,
    database: Database,
    case: str,
    audit_days: int,
    feedback_days: int,
    issued: list[timedelta],
    posted: list[timedelta],
    left: tuple[int, int],
) -> None:
    """Issued cards by issue time and feedback by arrival: older than retention is deleted."""
    if issued:
        add_issued(database, *issued)
    if posted:
        add_feedback(database, *posted)
    settings = Settings(audit_retention_days=audit_days, feedback_retention_days=feedback_days)
    pruned = prune(database, settings, NOW)
    assert (count(url, "issued_cards"), count(url, "feedback")) == left
    assert (pruned.issued_cards, pruned.feedback) == (len(issued) - left[0], len(posted) - left[1])


def test_prune_deletes_in_batches_until_nothing_old_is_left(url: str, database: Database) -> None:
    """More old rows than one batch: every one is deleted, the young row stays."""
    add_issued(database, *([500 * DAY] * (BATCH_ROWS + 7)), DAY)
    pruned = prune(database, Settings(), NOW)
    assert pruned.issued_cards == BATCH_ROWS + 7
    assert count(url, "issued_cards") == 1


JTI_CASES = [
    ("a jti whose token expired a second ago is removed", [timedelta(seconds=-1)], 0),
    ("a jti whose token is still valid is kept", [timedelta(seconds=30)], 1),
    ("only the expired of several go", [-DAY, timedelta(seconds=-1), timedelta(minutes=5)], 1),
]


@pytest.mark.parametrize(("case", "expires_in", "left"), JTI_CASES, ids=[c[0] for c in JTI_CASES])
def test_prune_removes_jti_rows_once_their_token_has_expired(
    url: str, database: Database, case: str, expires_in: list[timedelta], left: int
) -> None:
    """The replay store holds a jti only while its token could still be accepted."""
    add_jti(database, *expires_in)
    prune(database, Settings(), NOW)
    assert count(url, "seen_jti") == left


def test_a_verified_token_is_remembered_until_exp_plus_leeway_then_pruned(
    url: str, database: Database
) -> None:
    """A real signed token: its jti is stored until exp + leeway (a replay inside that window is
    refused), and the first prune after it removes the row."""
    key = ec_key("ec-retention")
    issuers = parse_trusted_issuers([{"iss": ISS, "jwks": jwks(key)}])
    clock_now = [NOW.timestamp()]
    verifier = Verifier(
        issuers, DatabaseJtiStore(database, lambda: clock_now[0]), BASE, lambda: clock_now[0]
    )
    payload = claims(ISS, BASE + "/cds-services", clock_now[0], lifetime=300)
    token = f"Bearer {key.sign(payload)}"
    verifier.verify(token, "/cds-services")
    with database.begin() as connection:
        [stored] = connection.execute(select(seen_jti.c.expires_at)).scalars().all()
    expected = datetime.fromtimestamp(payload["exp"] + LEEWAY_SECONDS, tz=UTC)
    assert stored.replace(tzinfo=UTC) == expected
    prune(database, Settings(), expected - timedelta(seconds=1))
    assert count(url, "seen_jti") == 1
    prune(database, Settings(), expected + timedelta(seconds=1))
    assert count(url, "seen_jti") == 0


@pytest.mark.slow
def test_the_prune_command_reports_what_it_deleted(url: str, database: Database) -> None:
    """`cds-service prune --database-url ... --json` deletes with the configured retention."""
    add_issued(database, 401 * DAY + (datetime.now(UTC) - NOW), DAY)
    add_feedback(database, 3 * DAY + (datetime.now(UTC) - NOW))
    env = {"CDS_FEEDBACK_RETENTION_DAYS": "2", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "prune", "--database-url", url, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "deleted": {"issued_cards": 1, "feedback": 1, "seen_jti": 0}
    }
    assert (count(url, "issued_cards"), count(url, "feedback")) == (1, 0)


@pytest.mark.slow
def test_the_prune_command_on_an_unreachable_database_exits_1(tmp_path: Path) -> None:
    """A database it cannot open is an error line and exit 1, not a traceback."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "prune",
            "--database-url",
            f"sqlite:///{blocker}/db.sqlite3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot prune the database")
    assert "Traceback" not in result.stderr


def wait_for(condition: Any, seconds: float = 20.0) -> bool:
    """Poll until condition() holds or the (generous) deadline passes."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_service_prunes_by_itself_at_most_once_per_interval(url: str) -> None:
    """Hook calls start a background prune when one is due: old rows go without any command; a
    second call within the interval starts none (rows added meanwhile stay until the next)."""
    app = create_app(testing=True, database_url=url, prune_interval_seconds=3600)
    db = app.extensions["cds_db"]
    pruner: Pruner = app.extensions["cds_pruner"]
    add_issued(db, 500 * DAY + (datetime.now(UTC) - NOW))
    client = app.test_client()
    request = fixture_request("eligible_patient_at_order_select")
    assert client.post(f"/cds-services/{SELECT}", json=request).status_code == 200
    assert wait_for(
        lambda: (
            count(url, "issued_cards") > 0
            and count(url, "issued_cards", "WHERE hook_instance = 'hook-0'") == 0
        )
    )
    pruner.wait()
    add_feedback(db, 500 * DAY + (datetime.now(UTC) - NOW))
    assert client.post(f"/cds-services/{SELECT}", json=request).status_code == 200
    pruner.wait()
    assert count(url, "feedback") == 1, "pruned twice within one interval"
    app.extensions["cds_audit"].flush()
    db.dispose()


def test_automatic_pruning_can_be_turned_off(url: str) -> None:
    """prune_interval_seconds 0: only the command prunes."""
    app = create_app(testing=True, database_url=url, prune_interval_seconds=0)
    db = app.extensions["cds_db"]
    add_issued(db, 500 * DAY)
    client = app.test_client()
    assert (
        client.post(
            f"/cds-services/{SELECT}", json=fixture_request("eligible_patient_at_order_select")
        ).status_code
        == 200
    )
    app.extensions["cds_audit"].flush()
    app.extensions["cds_pruner"].wait()
    assert count(url, "issued_cards", "WHERE hook_instance = 'hook-0'") == 1
    db.dispose()


def index_names(db_url: str, table: str) -> set[str]:
    engine = create_engine(db_url)
    try:
        return {str(index["name"]) for index in inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def test_an_older_database_gets_the_retention_indexes_on_first_use(url: str) -> None:
    """Tables created by a version without the issued_at / received_at indexes get them."""
    engine = create_engine(url)
    create_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_issued_cards_issued_at"))
        connection.execute(text("DROP INDEX ix_feedback_received_at"))
    engine.dispose()
    assert "ix_issued_cards_issued_at" not in index_names(url, "issued_cards")
    db = Database(url)
    with db.begin():
        pass
    db.dispose()
    assert "ix_issued_cards_issued_at" in index_names(url, "issued_cards")
    assert "ix_feedback_received_at" in index_names(url, "feedback")


@pytest.mark.postgres
def test_a_database_user_that_may_only_read_and_write_stores_and_prunes(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The deployment guide's least-privilege user (tables created by the owner, by a version
    without one of the retention indexes): it cannot add the index, says so once, and stores
    and prunes all the same."""
    owner_url = postgres.create_database()
    try:
        db = Database(owner_url)
        with db.begin() as connection:
            connection.execute(text("CREATE ROLE cds_rw LOGIN"))
            connection.execute(
                text("GRANT SELECT, INSERT, DELETE ON feedback, issued_cards, seen_jti TO cds_rw")
            )
            connection.execute(text("GRANT USAGE ON SEQUENCE feedback_id_seq TO cds_rw"))
            connection.execute(text("DROP INDEX ix_feedback_received_at"))
        db.dispose()
        limited_url = (
            make_url(owner_url).set(username="cds_rw").render_as_string(hide_password=False)
        )
        limited = Database(limited_url)
        add_feedback(limited, 500 * DAY)
        assert prune(limited, Settings(), NOW).feedback == 1
        limited.dispose()
        assert "index ix_feedback_received_at is missing" in caplog.text
    finally:
        engine = create_engine(owner_url)
        with engine.begin() as connection:
            connection.execute(text("DROP OWNED BY cds_rw"))
        engine.dispose()
        postgres.drop_database(owner_url)
        admin = create_engine(make_url(owner_url).set(database="postgres"))
        with admin.begin() as connection:
            connection.execute(text("DROP ROLE IF EXISTS cds_rw"))
        admin.dispose()
