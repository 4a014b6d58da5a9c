"""Durable state through SQLAlchemy: feedback, the issued-card audit, and seen JWT ids.

A SQLite file by default; PostgreSQL (or any SQLAlchemy URL) when several replicas share state.
No patient data is stored: cards are recorded by uuid, service, topic, indicator and hookInstance.
Rows are kept for a configured retention only (see retention.py).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert

log = logging.getLogger(__name__)
metadata = MetaData()


class FreeText(TypeDecorator[str]):
    """Text a client sent (feedback, hookInstance): lengths are bounded where requests are read
    (hook_request, feedback); NUL, which PostgreSQL text cannot hold, is stored as U+FFFD, so that
    valid input never becomes a 503 on one backend only."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else value.replace("\x00", "\ufffd")


issued_cards = Table(
    "issued_cards",
    metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column("service_id", String(100), nullable=False),
    Column("topic", String(100), nullable=False, index=True),
    Column("indicator", String(16), nullable=False),
    Column("hook_instance", FreeText, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False, index=True),  # retention
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
    Column("override_reason_system", FreeText, nullable=True),
    Column("override_reason_code", FreeText, nullable=True),
    Column("override_reason_display", FreeText, nullable=True),
    Column("override_comment", FreeText, nullable=True),
    Column("outcome_timestamp", FreeText, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),  # retention
)

seen_jti = Table(
    "seen_jti",
    metadata,
    Column("iss", String(300), nullable=False),
    Column("jti", String(300), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    UniqueConstraint("iss", "jti", name="uq_seen_jti"),
)


def make_engine(url: str, lock_timeout_seconds: float = 5.0) -> Engine:
    """An engine for the URL; for SQLite, the folder is created and writers wait instead of
    failing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            # One shared in-memory database (tests): every connection must see the same tables.
            return create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        # On OSError, connecting will fail with an OperationalError, which callers turn into a 503.
        with suppress(OSError):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": lock_timeout_seconds})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout_seconds * 1000)}")
            # Switching a new file to WAL can fail at once with "database is locked" while other
            # processes open it at the same moment (SQLite does not wait on the busy timeout
            # there): retry within the same timeout. WAL is then recorded in the file.
            deadline = time.monotonic() + lock_timeout_seconds
            while True:
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # Without it a silent server holds a feedback post (and /readyz) for minutes.
        connect_args["connect_timeout"] = max(2, math.ceil(lock_timeout_seconds))  # libpq minimum
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def database_name(url: str) -> str:
    """The URL to show people: password hidden, and a SQLite file as an absolute path (a relative
    one depends on the folder the command was started in)."""
    parsed = make_url(url)
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database
        and parsed.database != ":memory:"
        and not parsed.database.startswith("file:")
    ):
        parsed = parsed.set(database=str(Path(parsed.database).absolute()))
    return parsed.render_as_string(hide_password=True)


SCHEMA_LOCK_KEY = 0x6364735F736368  # any constant shared by every replica ("cds_sch")
"""PostgreSQL advisory lock held while creating tables, so replicas starting at once do not race."""


def create_schema(engine: Engine) -> None:
    """Create missing tables; safe when several processes or replicas do it at the same moment
    (a plain check-then-create makes all but one of them fail their first request)."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    if engine.dialect.name == "sqlite":
        # BEGIN IMMEDIATE takes the write lock first, waiting for it: a deferred transaction that
        # reads the schema and then writes fails at once ("database is locked", no busy wait)
        # when another replica created a table in between.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                for table in metadata.sorted_tables:
                    connection.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        connection.execute(CreateIndex(index, if_not_exists=True))
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")
        return
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Concurrent CREATE TABLE (even IF NOT EXISTS) can collide in PostgreSQL's catalogue.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        metadata.create_all(connection)
        # create_all skips the indexes of tables that exist: add those of newer versions. Only
        # missing ones: CREATE INDEX, even IF NOT EXISTS, needs the table's owner, and the
        # service may run as a user that may only read and write.
        inspector = inspect(connection)
        for table in metadata.sorted_tables:
            present = {index["name"] for index in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in present:
                    try:
                        with connection.begin_nested():
                            connection.execute(CreateIndex(index))
                    except DBAPIError as exc:  # an optimisation: never stop storage for it
                        log.warning(
                            "index %s is missing and this database user cannot create "
                            "it (%s); let the tables' owner start the service once",
                            index.name,
                            type(exc.orig).__name__,
                        )


class Database:
    """The engine, created and given its tables on first use, so the service starts (and answers
    hooks) while the database is down; a later call retries. Errors surface as SQLAlchemyError or
    OSError for callers to map (feedback: 503; issued-card audit: a logged warning)."""

    def __init__(self, url: str, lock_timeout_seconds: float = 5.0) -> None:
        self.url = url
        self.lock_timeout_seconds = lock_timeout_seconds
        self._engine: Engine | None = None
        self._schema_ready = False
        self._lock = threading.Lock()

    @property
    def in_memory(self) -> bool:
        """An in-memory SQLite database (tests): one connection shared by every thread, and
        nothing outlives the process."""
        parsed = make_url(self.url)
        return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.url, self.lock_timeout_seconds)
            if not self._schema_ready:
                create_schema(self._engine)
                self._schema_ready = True
            return self._engine

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on any error."""
        with self.engine.begin() as connection:
            yield connection

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (the readiness probe)."""
        with self.begin() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()


def init_storage(app: Any, settings: Any) -> Database:
    """Attach the database named by `settings.database_url` as `app.extensions["cds_db"]`."""
    database = Database(settings.database_url, settings.database_lock_timeout_seconds)
    app.extensions["cds_db"] = database
    return database


def insert_ignore(connection: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert rows, skipping any that would violate a unique key; returns how many were inserted.

    ON CONFLICT DO NOTHING on SQLite and PostgreSQL; elsewhere one savepoint per row."""
    dialect = connection.dialect.name
    inserted = 0
    for row in rows:
        if dialect in ("sqlite", "postgresql"):
            statement: SqliteInsert | PostgresqlInsert
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                statement = sqlite_insert(table)
            else:
                from sqlalchemy.dialects.postgresql import insert as postgresql_insert

                statement = postgresql_insert(table)
            # Counted by RETURNING: rowcount of an INSERT is -1 with psycopg (SQLAlchemy 2.1).
            statement = statement.values(**row).on_conflict_do_nothing()
            result = connection.execute(statement.returning(*list(table.columns)[:1]))
            inserted += len(result.fetchall())
        else:
            try:
                with connection.begin_nested():
                    connection.execute(table.insert().values(**row))
                inserted += 1
            except IntegrityError:
                pass
    return inserted
