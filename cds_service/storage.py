"""Durable state through SQLAlchemy: feedback, the issued-card audit, and seen JWT ids.

A SQLite file by default; PostgreSQL (or any SQLAlchemy URL) when several replicas share state.
No patient data is stored: cards are recorded by uuid, service, topic, indicator and hookInstance.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

metadata = MetaData()

issued_cards = Table(
    "issued_cards",
    metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column("service_id", String(100), nullable=False),
    Column("topic", String(100), nullable=False, index=True),
    Column("indicator", String(16), nullable=False),
    Column("hook_instance", String(200), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # sha256 of the canonical feedback item: a repeated identical post is stored once.
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("service_id", String(100), nullable=False),
    Column("card_uuid", String(36), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", Text, nullable=True),
    Column("override_reason_system", String(200), nullable=True),
    Column("override_reason_code", String(100), nullable=True),
    Column("override_reason_display", String(300), nullable=True),
    Column("override_comment", Text, nullable=True),
    Column("outcome_timestamp", String(40), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

seen_jti = Table(
    "seen_jti",
    metadata,
    Column("iss", String(300), nullable=False),
    Column("jti", String(300), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    UniqueConstraint("iss", "jti", name="uq_seen_jti"),
)


def make_engine(url: str) -> Engine:
    """An engine for the URL; for SQLite, the folder is created and writers wait instead of failing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            # One shared in-memory database (tests): every connection must see the same tables.
            return create_engine(url, poolclass=StaticPool,
                                 connect_args={"check_same_thread": False})
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # connecting will fail with an OperationalError, which callers turn into a 503
        engine = create_engine(url, connect_args={"timeout": 5})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)


class Database:
    """The engine, created and given its tables on first use, so the service starts (and answers
    hooks) while the database is down; a later call retries. Errors surface as SQLAlchemyError or
    OSError for callers to map (feedback: 503; issued-card audit: a logged warning)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._schema_ready = False
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.url)
            if not self._schema_ready:
                create_schema(self._engine)
                self._schema_ready = True
            return self._engine

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on any error."""
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()


def init_storage(app: Any, settings: Any) -> Database:
    """Attach the database named by `settings.database_url` as `app.extensions["cds_db"]`."""
    database = Database(settings.database_url)
    app.extensions["cds_db"] = database
    return database


def insert_ignore(connection: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert rows, skipping any that would violate a unique key; returns how many were inserted.

    ON CONFLICT DO NOTHING on SQLite and PostgreSQL; elsewhere one savepoint per row."""
    dialect = connection.dialect.name
    inserted = 0
    for row in rows:
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            result = connection.execute(dialect_insert(table).values(**row).on_conflict_do_nothing())
            inserted += max(result.rowcount, 0)
        else:
            try:
                with connection.begin_nested():
                    connection.execute(table.insert().values(**row))
                inserted += 1
            except IntegrityError:
                pass
    return inserted
