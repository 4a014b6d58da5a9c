"""Faults of the database and of the FHIR server (issue 6, item 3), as tables.

Database down, missing or locked: hook calls still answer with the very same cards (the issued-card
audit is dropped and counted), feedback answers 503 so the EHR retries, and once the database is
back the retried feedback is stored exactly once. A 200 to feedback means committed: a second
engine opened afterwards reads the rows. FHIR server failing in ways `test_fhir_server_fallback.py`
does not already cover: each is answered within the deadline, with a 412 naming the prefetch key or
with cards that are not an all-clear.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fhir_stub_server import without_prefetch
from fixture_requests import fixture_request as fixture
from flask import Flask
from sqlalchemy import create_engine, text

from cds_service.app import create_app

SELECT = "/cds-services/lemtrada-order-select"
FEEDBACK = f"{SELECT}/feedback"
LOCK_TIMEOUT = 0.2
"""database_lock_timeout_seconds of the apps under test: a locked write fails after this."""
CARD = "7eadc5a4-02e6-518d-8c59-5d1bfce9c746"


HOOK_REQUEST = fixture("hiv_test_positive")


def comment(text_: str) -> dict[str, Any]:
    return {
        "card": CARD,
        "outcome": "overridden",
        "overrideReason": {"userComment": text_},
        "outcomeTimestamp": "2026-01-12T10:05:31Z",
    }


def stored_comments(path: Path) -> list[str]:
    """Feedback comments as a second, fresh engine on the same file reads them (committed data)."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            return [
                row[0]
                for row in connection.execute(
                    text("SELECT override_comment FROM feedback ORDER BY id")
                )
            ]
    finally:
        engine.dispose()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the database ----------------------------------------------------------------------------


@dataclass
class Outage:
    """A database URL that is failing now, and how to end the failure (None: it cannot end)."""

    url: str
    path: Path | None
    end: Callable[[], None] | None
    release: Callable[[], None] | None = None
    """Frees what the outage holds (a socket) at teardown, when `end` cannot."""


def folder_is_a_file(tmp: Path) -> Outage:
    blocker = tmp / "mount"
    blocker.write_text("a file where the database folder should be")

    def end() -> None:
        blocker.unlink()
        blocker.mkdir()

    return Outage(f"sqlite:///{blocker / 'db.sqlite3'}", blocker / "db.sqlite3", end)


def file_is_a_directory(tmp: Path) -> Outage:
    path = tmp / "db.sqlite3"
    path.mkdir()
    return Outage(f"sqlite:///{path}", path, path.rmdir)


def exclusively_locked(tmp: Path) -> Outage:
    path = tmp / "db.sqlite3"
    ready = create_app(testing=True, database_url=f"sqlite:///{path}")  # creates the tables
    ready.extensions["cds_db"].ping()
    ready.extensions["cds_audit"].flush()  # the writer thread is done with the db
    ready.extensions["cds_db"].dispose()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")

    def end() -> None:
        holder.execute("ROLLBACK")
        holder.close()

    return Outage(f"sqlite:///{path}", path, end)


def postgres_on_a_closed_port(tmp: Path) -> Outage:
    return Outage(f"postgresql+psycopg://u:p@127.0.0.1:{closed_port()}/x", None, None)


def postgres_that_never_answers(tmp: Path) -> Outage:
    """A port that accepts TCP connections but never speaks (a hung server or a black hole)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    return Outage(f"postgresql+psycopg://u:p@127.0.0.1:{port}/x", None, None, silent.close)


NO_PSYCOPG = importlib.util.find_spec("psycopg") is None
OUTAGES = [
    pytest.param(folder_is_a_file, id="the database folder cannot be created (a file is there)"),
    pytest.param(file_is_a_directory, id="the database file is a directory"),
    pytest.param(exclusively_locked, id="another connection holds an exclusive lock"),
    pytest.param(
        postgres_on_a_closed_port,
        id="PostgreSQL does not listen on its port",
        marks=pytest.mark.skipif(NO_PSYCOPG, reason="psycopg is not installed"),
    ),
    pytest.param(
        postgres_that_never_answers,
        id="PostgreSQL accepts connections but never answers",
        marks=pytest.mark.skipif(NO_PSYCOPG, reason="psycopg is not installed"),
    ),
]


def make_app(url: str) -> Flask:
    return create_app(testing=True, database_url=url, database_lock_timeout_seconds=LOCK_TIMEOUT)


@pytest.fixture(scope="module")
def healthy_cards(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The response body to HOOK_REQUEST from an app whose database works."""
    app = make_app(f"sqlite:///{tmp_path_factory.mktemp('healthy') / 'db.sqlite3'}")
    response = app.test_client().post(SELECT, json=HOOK_REQUEST)
    assert response.status_code == 200
    app.extensions["cds_audit"].flush()
    assert app.extensions["cds_audit"].dropped == 0
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()
    return response.get_data()


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    """Callbacks run at teardown, even when an assertion failed half-way (locks, engines)."""
    callbacks: list[Callable[[], None]] = []
    yield callbacks
    for callback in reversed(callbacks):
        with contextlib.suppress(Exception):  # already ended by the test
            callback()


@pytest.mark.parametrize("outage", OUTAGES)
@pytest.mark.slow
def test_database_outage_keeps_cards_and_makes_feedback_retry(
    tmp_path: Path,
    healthy_cards: bytes,
    cleanup: list[Callable[[], None]],
    outage: Callable[[Path], Outage],
) -> None:
    """Cards as with a healthy database, audit dropped and counted, feedback 503 then stored
    once."""
    down = outage(tmp_path)
    for callback in (down.end, down.release):
        if callback is not None:
            cleanup.append(callback)
    app = make_app(down.url)
    cleanup.append(app.extensions["cds_db"].dispose)
    client = app.test_client()

    started = time.monotonic()
    response = client.post(SELECT, json=HOOK_REQUEST)
    assert time.monotonic() - started < 5.0
    assert response.status_code == 200
    assert response.get_data() == healthy_cards
    audit = app.extensions["cds_audit"]
    audit.flush()
    assert audit.dropped >= len(response.get_json()["cards"]) > 0

    body = {"feedback": [comment("during the outage")]}
    started = time.monotonic()
    refused = client.post(FEEDBACK, json=body)
    assert time.monotonic() - started < 10.0, "the EHR must not wait for a dead database"
    assert refused.status_code == 503
    assert refused.get_json()["resourceType"] == "OperationOutcome"
    assert refused.get_json()["issue"][0]["code"] == "transient"
    if down.end is None:
        return  # the port stays closed: nothing to retry against
    down.end()
    assert client.post(FEEDBACK, json=body).status_code == 200
    assert client.post(FEEDBACK, json=body).status_code == 200  # the EHR retried once more
    assert down.path is not None
    assert stored_comments(down.path) == ["during the outage"]


@pytest.mark.slow
def test_feedback_interleaved_with_outages_loses_nothing_accepted(
    tmp_path: Path, cleanup: list[Callable[[], None]]
) -> None:
    """Over posts interleaved with lock outages, every 200 is committed and no 503 left a trace."""
    path = tmp_path / "db.sqlite3"
    app = make_app(f"sqlite:///{path}")
    cleanup.append(app.extensions["cds_db"].dispose)
    client = app.test_client()
    app.extensions["cds_db"].ping()
    accepted: list[str] = []
    refused: list[str] = []
    for i in range(12):
        locked = i % 3 == 1
        holder = sqlite3.connect(path, isolation_level=None)
        cleanup.append(holder.close)
        if locked:
            holder.execute("BEGIN EXCLUSIVE")
        texts = [f"post {i} item {j}" for j in range(3)]  # all or nothing per post
        response = client.post(FEEDBACK, json={"feedback": [comment(t) for t in texts]})
        if locked:
            holder.execute("ROLLBACK")
        holder.close()
        assert response.status_code == (503 if locked else 200)
        if response.status_code == 200:
            accepted.extend(texts)
            assert set(texts) <= set(stored_comments(path)), "a 200 that was not committed"
        else:
            refused.extend(texts)
    assert len(refused) == 4 * 3
    stored = stored_comments(path)
    assert stored == accepted
    assert not set(stored) & set(refused)


# -- the FHIR server ---------------------------------------------------------------------------

DEADLINE = 2.0
"""Long enough for the healthy keys on a loaded machine (the wrong-types case needs them all)."""
MARGIN = 3.0
"""Generous: a loaded machine may be late by this much; a service that ignored the deadline
would wait until the stub stops (the trickle never ends)."""
TOKEN = "stub-token"


@dataclass(frozen=True)
class FhirFault:
    """Stub options, app settings, and whether the answer is a 412 (else: cards, not all-clear)."""

    stub: dict[str, Any]
    refused: bool = True
    mentions: str = ""
    settings: dict[str, Any] | None = None


FHIR_FAULTS = [
    pytest.param(
        FhirFault({"fault": "reset"}, mentions="could not be reached"),
        id="the connection is reset in the middle of the answer",
    ),
    pytest.param(
        FhirFault({"fault": "hang-up"}, mentions="could not be reached"),
        id="the server closes the connection without answering",
    ),
    pytest.param(
        FhirFault({"fault": "trickle"}, mentions="deadline"),
        id="an answer that trickles in and never finishes",
    ),
    pytest.param(
        FhirFault(
            {"fault": "huge", "huge_bytes": 2_000_000},
            mentions="too large",
            settings={"max_body_bytes": 1_000_000},
        ),
        id="an answer larger than the size cap",
    ),
    pytest.param(
        FhirFault({"fault": "html"}, mentions="not JSON"),
        id="an HTML login page instead of FHIR JSON",
    ),
    pytest.param(
        FhirFault({"fault": "wrong-types"}, refused=False),
        id="a searchset of resources of an unknown type leaves the screening unknown",
    ),
]


def fetch_threads_left(until: float) -> list[str]:
    """FHIR fetch threads still alive at `until` (monotonic); waits for them until then."""
    while True:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("fhir-fetch")]
        if not alive or time.monotonic() >= until:
            return alive
        time.sleep(0.05)


@pytest.mark.parametrize("fault", FHIR_FAULTS)
@pytest.mark.slow
def test_fhir_server_fault_is_answered_within_the_deadline(stubs: Any, fault: FhirFault) -> None:
    """A failing FHIR server gives 412 naming the key, or cards that are not an all-clear, in
    time."""
    full = fixture("eligible_patient_at_order_select")
    stub = stubs(full, fault_types=("Observation",), **fault.stub)
    app = create_app(
        testing=True,
        fhir_server_allowlist=(stub.base_url,),
        http_allowed_hosts=("127.0.0.1",),
        fhir_deadline_seconds=DEADLINE,
        **(fault.settings or {}),
    )
    client = app.test_client()
    try:
        started = time.monotonic()
        response = client.post(SELECT, json=without_prefetch(full, stub.base_url, TOKEN))
        elapsed = time.monotonic() - started
    finally:
        app.extensions["cds_fetcher"].session.close()
    assert elapsed < DEADLINE + MARGIN
    assert fetch_threads_left(started + DEADLINE + MARGIN) == []  # nothing keeps reading
    body = response.get_json()
    assert TOKEN not in response.get_data(as_text=True)
    if fault.refused:
        assert response.status_code == 412, body
        assert body["resourceType"] == "OperationOutcome"
        assert "prefetch.observations" in body["issue"][0]["expression"]  # others: abandoned
        assert fault.mentions in body["issue"][0]["diagnostics"]
        return
    assert response.status_code == 200, body
    cards = {c["source"]["topic"]["code"]: c for c in body["cards"]}
    assert cards["eligibility-summary"]["indicator"] != "info"
    checks = cards["eligibility-summary"]["extension"]["org.example.cds-service.checklist"]
    unknown = {c["topic"] for c in checks["checks"] if c["status"] == "unknown"}
    assert {"hiv-screening", "tb-screening", "hcv-screening"} <= unknown
    assert "pretreatment-workup" in cards
