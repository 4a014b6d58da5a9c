"""The storage contract on a real PostgreSQL server (the database replicas share), proven the same
on a SQLite file: schema on first use, idempotent all-or-nothing feedback, the issued-card audit,
the JWT replay store across replicas, concurrent writers, the feedback report and the whole app.

PostgreSQL cases are marked `postgres`; they start a throwaway server (tests/postgres_server.py) or
use CDS_TEST_POSTGRES_URL, and skip with the reason when neither is possible.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fixture_requests import fixture_request as hook_request
from postgres_server import PostgresServer, PostgresUnavailable
from served import free_port
from sqlalchemy import create_engine, inspect, select, text

from cds_service.app import create_app
from cds_service.auth import DatabaseJtiStore
from cds_service.errors import Unavailable
from cds_service.feedback import (
    CardAudit,
    feedback_report,
    store_feedback,
    validate_feedback,
)
from cds_service.storage import Database, feedback, issued_cards

ROOT = Path(__file__).resolve().parents[1]
SELECT = "lemtrada-order-select"
NOW = datetime(2026, 1, 12, 10, 5, 31, tzinfo=UTC)
WHEN = "2026-01-12T10:05:31Z"
CARD = "7eadc5a4-02e6-518d-8c59-5d1bfce9c746"
OTHER_CARD = "00000000-0000-4000-8000-000000000000"
SUGGESTION = "0b8e3c0a-7c1f-4d7e-9a55-1c2b3d4e5f60"
ISS = "https://ehr.example.org"
TABLES = {"feedback", "issued_cards", "seen_jti"}

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (skips every PostgreSQL case when there is none)."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    database_url = server.create_database()
    yield database_url
    server.drop_database(database_url)


@pytest.fixture
def database(url: str) -> Iterator[Database]:
    db = Database(url)
    yield db
    db.dispose()


def count(url: str, table: str, where: str = "") -> int:
    """Rows in a table, read through a separate engine (as another replica or an operator would)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = text(f"SELECT count(*) FROM {table} {where}")
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def accepted(card: str = CARD) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": SUGGESTION}],
        "outcomeTimestamp": WHEN,
    }


def overridden(card: str = CARD, **reason: Any) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": reason,
        "outcomeTimestamp": WHEN,
    }


def post(database: Database, *items: dict[str, Any]) -> int:
    return store_feedback(
        database, SELECT, validate_feedback(SELECT, {"feedback": list(items)}), NOW
    )


# --- schema and feedback -------------------------------------------------------------------------


def test_the_tables_are_created_on_first_use(url: str) -> None:
    """A new, empty database gets its three tables from the service itself on first use."""
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == set()
    database = Database(url)  # constructing connects to nothing (the service starts while down)
    assert set(inspect(engine).get_table_names()) == set()
    with database.begin():
        pass
    assert set(inspect(engine).get_table_names()) == TABLES
    database.dispose()
    engine.dispose()


IDEMPOTENCY = [
    (
        "a repeated identical post is stored once",
        [[accepted(), overridden(userComment="later")]] * 3,
        [2, 0, 0],
        2,
    ),
    ("an item repeated within one post is stored once", [[accepted(), accepted()]], [1], 1),
    (
        "two different outcomes for one card are both kept",
        [[overridden(userComment="first")], [accepted()]],
        [1, 1],
        2,
    ),
    (
        "the same outcome for two cards is kept for each card",
        [[accepted(CARD)], [accepted(OTHER_CARD)]],
        [1, 1],
        2,
    ),
]


@pytest.mark.parametrize(
    ("name", "posts", "new", "stored"), IDEMPOTENCY, ids=[case[0] for case in IDEMPOTENCY]
)
def test_feedback_is_stored_once_per_fingerprint(
    url: str,
    database: Database,
    name: str,
    posts: list[list[dict[str, Any]]],
    new: list[int],
    stored: int,
) -> None:
    """Each post reports how many items were new; retries never double-count."""
    assert [post(database, *items) for items in posts] == new
    assert count(url, "feedback") == stored


def test_a_batch_with_a_row_the_database_refuses_stores_none(url: str, database: Database) -> None:
    """All or nothing: when the database refuses the third row, the first two are not kept."""
    items = validate_feedback(SELECT, {"feedback": [accepted(), overridden(userComment="x")]})
    broken = replace(items[0], fingerprint="f" * 64, outcome_timestamp=None)  # NOT NULL column
    with pytest.raises(Unavailable):
        store_feedback(database, SELECT, [*items, broken], NOW)
    assert count(url, "feedback") == 0
    assert store_feedback(database, SELECT, items, NOW) == 2  # the EHR's retry is stored


HOSTILE_TEXT = [
    (
        "an override display of 5000 characters",
        overridden(reason={"system": "s", "code": "c", "display": "d" * 5000}),
    ),
    (
        "an override reason code of 500 characters",
        overridden(reason={"system": "s" * 400, "code": "c" * 500}),
    ),
    ("a comment holding a NUL character", overridden(userComment="before\u0000after")),
    (
        "a reason code holding a NUL character",
        overridden(reason={"system": "s", "code": "a\u0000"}),
    ),
    (
        "a timestamp with 60 fractional digits",
        {**accepted(), "outcomeTimestamp": "2026-01-12T10:05:31." + "1" * 60 + "Z"},
    ),
]


@pytest.mark.parametrize(("name", "item"), HOSTILE_TEXT, ids=[case[0] for case in HOSTILE_TEXT])
def test_valid_feedback_with_unusual_text_is_stored_on_every_backend(
    url: str, database: Database, name: str, item: dict[str, Any]
) -> None:
    """Schema-valid feedback is stored (200), never a 503 the EHR would retry forever."""
    assert post(database, item) == 1
    assert count(url, "feedback") == 1


# --- the issued-card audit -----------------------------------------------------------------------


def card(uuid: str, topic: str, indicator: str = "warning") -> dict[str, Any]:
    return {"uuid": uuid, "indicator": indicator, "source": {"topic": {"code": topic}}}


AUDITS = [
    (
        "two hook calls with their cards are all recorded",
        [
            (
                "hook-1",
                [card(CARD, "hiv-screening", "critical"), card(SUGGESTION, "eligibility-summary")],
            ),
            ("hook-2", [card(OTHER_CARD, "tb-screening")]),
        ],
        3,
    ),
    (
        "a repeated hook call records each card once",
        [("hook-1", [card(CARD, "hiv-screening")]), ("hook-1", [card(CARD, "hiv-screening")])],
        1,
    ),
    (
        "a hookInstance of 1000 characters with a NUL is still recorded",
        [("h\u0000" + "x" * 1000, [card(CARD, "hiv-screening")])],
        1,
    ),
    (
        "one odd hook call does not lose the audit of the others",
        [
            ("hook-1", [card(CARD, "a")]),
            ("\u0000" * 300, [card(OTHER_CARD, "b")]),
            ("hook-3", [card(SUGGESTION, "c")]),
        ],
        3,
    ),
]


@pytest.mark.parametrize(("name", "calls", "stored"), AUDITS, ids=[case[0] for case in AUDITS])
def test_the_card_audit_writer_records_issued_cards(
    url: str,
    database: Database,
    name: str,
    calls: list[tuple[str, list[dict[str, Any]]]],
    stored: int,
) -> None:
    """After a flush, every issued card is a row of the audit and nothing was dropped."""
    audit = CardAudit(database)
    for hook_instance, cards in calls:
        audit.submit(SELECT, hook_instance, cards, NOW)
    audit.flush()
    assert audit.dropped == 0
    assert count(url, "issued_cards") == stored


# --- the JWT replay store ------------------------------------------------------------------------

REPLAYS = [
    (
        "the same token at the second replica is a replay",
        [(0, ISS, "a"), (1, ISS, "a")],
        [True, False],
    ),
    (
        "the same token twice at one replica is a replay",
        [(0, ISS, "a"), (0, ISS, "a")],
        [True, False],
    ),
    (
        "two tokens with different ids are both accepted",
        [(0, ISS, "a"), (1, ISS, "b")],
        [True, True],
    ),
    (
        "the same id from two issuers is not a replay",
        [(0, ISS, "a"), (1, ISS + "/other", "a")],
        [True, True],
    ),
]


@pytest.mark.parametrize(("name", "calls", "fresh"), REPLAYS, ids=[case[0] for case in REPLAYS])
def test_replicas_sharing_a_database_refuse_each_others_replays(
    url: str, name: str, calls: list[tuple[int, str, str]], fresh: list[bool]
) -> None:
    """Two replicas (two Database instances on one server) see each other's (iss, jti)."""
    replicas = [Database(url), Database(url)]
    stores = [DatabaseJtiStore(db, clock=lambda: NOW.timestamp()) for db in replicas]
    assert [stores[i].remember(iss, jti, NOW.timestamp() + 300) for i, iss, jti in calls] == fresh
    for db in replicas:
        db.dispose()


# --- concurrency ---------------------------------------------------------------------------------


def run_at_once(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) on `workers` threads released together; results, or the exceptions raised."""
    barrier = threading.Barrier(workers)
    results: list[Any] = [None] * workers

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # returned so the test can show it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_replicas_starting_at_once_store_the_same_feedback_exactly_once(url: str) -> None:
    """Eight replicas on an empty database, all posting one item at once: all succeed (the schema
    race included), exactly one says it was new, and exactly one row is stored."""
    replicas = [Database(url) for _ in range(8)]
    results = run_at_once(8, lambda i: post(replicas[i], accepted()))
    for db in replicas:
        db.dispose()
    assert sorted(results, key=repr) == [0] * 7 + [1], results
    assert count(url, "feedback") == 1


def test_one_token_presented_to_eight_replicas_at_once_is_accepted_once(url: str) -> None:
    """A token replayed in parallel against every replica gets through exactly one of them."""
    replicas = [Database(url) for _ in range(8)]
    stores = [DatabaseJtiStore(db, clock=lambda: NOW.timestamp()) for db in replicas]
    results = run_at_once(8, lambda i: stores[i].remember(ISS, "jti-1", NOW.timestamp() + 300))
    for db in replicas:
        db.dispose()
    assert sorted(results, key=repr) == [False] * 7 + [True]
    assert count(url, "seen_jti") == 1


JTIS = [
    ("an ordinary jti", "jti-ordinary"),
    ("a jti of 5000 characters", "j" * 5000),
    ("a jti with a NUL character", "before\x00after"),
    ("a jti of non-ASCII text", "jti-Überprüfung-検査"),
]


@pytest.mark.parametrize("case,jti", JTIS, ids=[j[0] for j in JTIS])
def test_any_jti_a_signed_token_carries_is_remembered_and_refused_on_replay(
    url: str, database: Database, case: str, jti: str
) -> None:
    """The replay store takes every jti (any length or character): accepted once, then refused,
    never a 503 for a valid token."""
    store = DatabaseJtiStore(database, clock=lambda: NOW.timestamp())
    expires = NOW.timestamp() + 300
    assert [store.remember(ISS, jti, expires), store.remember(ISS, jti, expires)] == [True, False]
    assert store.remember(ISS, jti + "-other", expires) is True


# --- the report ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_feedback_report_and_its_command_read_the_shared_database(
    url: str, database: Database
) -> None:
    """Audit and feedback written by the service are counted per topic, in Python and by
    `cds-service feedback-report --database-url`."""
    audit = CardAudit(database)
    audit.submit(
        SELECT,
        "hook-1",
        [card(CARD, "hiv-screening", "critical"), card(OTHER_CARD, "eligibility-summary")],
        NOW,
    )
    audit.flush()
    post(
        database,
        overridden(
            CARD, reason={"system": "s", "code": "MEDPREC", "display": "medical precaution"}
        ),
        accepted(OTHER_CARD),
    )
    expected = {
        "hiv-screening": {
            "topic": "hiv-screening",
            "issued": 1,
            "accepted": 0,
            "overridden": 1,
            "overrideReasons": {"MEDPREC (medical precaution)": 1},
            "comments": 0,
        },
        "eligibility-summary": {
            "topic": "eligibility-summary",
            "issued": 1,
            "accepted": 1,
            "overridden": 0,
            "overrideReasons": {},
            "comments": 0,
        },
    }
    assert {r.topic: r.as_json() for r in feedback_report(database)} == expected
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "feedback-report",
            "--database-url",
            url,
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert {t["topic"]: t for t in json.loads(result.stdout)["topics"]} == expected


# --- the whole app -------------------------------------------------------------------------------


def test_the_app_audits_cards_and_stores_feedback_in_the_database(url: str) -> None:
    """Hook call -> cards audited; feedback on a returned card -> 200 {} and the row is there."""
    app = create_app(testing=True, database_url=url)
    client = app.test_client()
    request = hook_request("eligible_patient_at_order_select")
    response = client.post(f"/cds-services/{SELECT}", json=request)
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    app.extensions["cds_audit"].flush()
    assert (
        count(url, "issued_cards", f"WHERE hook_instance = '{request['hookInstance']}'")
        == len(cards)
        > 0
    )
    uuid = cards[0]["uuid"]
    response = client.post(
        f"/cds-services/{SELECT}/feedback",
        json={"feedback": [overridden(uuid, userComment="seen")]},
    )
    assert (response.status_code, response.get_json()) == (200, {})
    assert count(url, "feedback", f"WHERE card_uuid = '{uuid}'") == 1
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


@pytest.mark.postgres
def test_a_database_outage_mid_way_gives_503_feedback_and_still_answers_hooks() -> None:
    """PostgreSQL stopped mid-way: hooks still 200, feedback 503 (transient, the EHR retries);
    once the server is back the retried post is stored and the audit resumes."""
    try:
        server = PostgresServer.start()  # its own server: this test stops it
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    try:
        if server.process is None:
            pytest.skip("CDS_TEST_POSTGRES_URL names a server this test must not stop")
        url = server.create_database()
        app = create_app(testing=True, database_url=url)
        client = app.test_client()
        audit = app.extensions["cds_audit"]
        request = hook_request("eligible_patient_at_order_select")
        body = {"feedback": [overridden(CARD, userComment="during the outage")]}
        assert client.post(f"/cds-services/{SELECT}", json=request).status_code == 200
        audit.flush()

        server.pause()
        response = client.post(f"/cds-services/{SELECT}", json=request)
        assert response.status_code == 200 and response.get_json()["cards"]
        audit.flush()
        assert audit.dropped > 0
        response = client.post(f"/cds-services/{SELECT}/feedback", json=body)
        assert response.status_code == 503
        assert response.get_json()["issue"][0]["code"] == "transient"

        server.resume()
        assert client.post(f"/cds-services/{SELECT}/feedback", json=body).status_code == 200
        assert count(url, "feedback") == 1
        app.extensions["cds_audit"].flush()  # the writer thread is done with the db
        app.extensions["cds_db"].dispose()
    finally:
        server.stop()


def test_a_postgresql_url_with_nothing_listening_gives_503_feedback_and_still_answers_hooks() -> (
    None
):
    """A replica configured with an unreachable PostgreSQL still answers hooks; feedback is 503."""
    app = create_app(
        testing=True, database_url=f"postgresql+psycopg://cds@127.0.0.1:{free_port()}/cds"
    )
    client = app.test_client()
    response = client.post(
        f"/cds-services/{SELECT}", json=hook_request("eligible_patient_at_order_select")
    )
    assert response.status_code == 200 and response.get_json()["cards"]
    response = client.post(f"/cds-services/{SELECT}/feedback", json={"feedback": [accepted()]})
    assert response.status_code == 503
    app.extensions["cds_audit"].flush()
    assert app.extensions["cds_audit"].dropped > 0
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


def test_the_stored_feedback_reads_back_as_posted(url: str, database: Database) -> None:
    """What the EHR posted is what an operator reads back (outcome, reason, comment), per
    backend."""
    post(
        database,
        overridden(
            CARD, reason={"system": "s", "code": "MEDPREC", "display": "d"}, userComment="discussed"
        ),
    )
    with database.begin() as connection:
        row = connection.execute(select(feedback)).mappings().one()
    assert (
        row["card_uuid"],
        row["outcome"],
        row["override_reason_code"],
        row["override_reason_display"],
        row["override_comment"],
        row["outcome_timestamp"],
    ) == (CARD, "overridden", "MEDPREC", "d", "discussed", WHEN)
    assert row["received_at"].replace(tzinfo=row["received_at"].tzinfo or UTC) == NOW
    assert issued_cards.name in inspect(database.engine).get_table_names()
