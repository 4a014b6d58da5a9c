"""Durable state through SQLAlchemy: feedback, the issued-card audit, and seen JWT ids.

A SQLite file by default; PostgreSQL (or any SQLAlchemy URL) when several replicas share state.
No patient data is stored: cards are recorded by uuid, service, topic, indicator and hookInstance.
"""

from __future__ import annotations

from pathlib import Path

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
from sqlalchemy.engine import make_url

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
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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
