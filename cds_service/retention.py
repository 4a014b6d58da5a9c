"""Bounded storage: issued-card rows and feedback are deleted once older than their retention,
seen JWT ids once their token has expired.

`prune` is what `cds-service prune` runs. `Pruner` runs it automatically, at most once per
`prune_interval_seconds` per process, on a background thread that a request starts (like the card
audit writer), so no hook call or feedback post ever waits for a delete. Deletes go in batches,
each its own short transaction, so a first prune of a large table does not hold SQLite's write
lock long enough to turn feedback posts into 503s.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Table, delete, select
from sqlalchemy.exc import SQLAlchemyError

from .config import Settings
from .observability import PRUNED
from .storage import Database, feedback, issued_cards, seen_jti

log = logging.getLogger(__name__)

BATCH_ROWS = 5000


@dataclass(frozen=True)
class Pruned:
    """Rows deleted per table by one prune."""

    issued_cards: int
    feedback: int
    seen_jti: int

    def as_json(self) -> dict[str, int]:
        return asdict(self)


def prune(database: Database, settings: Settings, now: datetime) -> Pruned:
    """Delete what retention no longer keeps; raises SQLAlchemyError/OSError when the database is
    unavailable (rows deleted by earlier batches stay deleted: pruning is idempotent)."""
    pruned = Pruned(
        issued_cards=_delete_older(
            database,
            issued_cards,
            issued_cards.c.card_uuid,
            issued_cards.c.issued_at,
            now,
            settings.audit_retention_days,
        ),
        feedback=_delete_older(
            database,
            feedback,
            feedback.c.id,
            feedback.c.received_at,
            now,
            settings.feedback_retention_days,
        ),
        seen_jti=_delete_expired_jti(database, now),
    )
    for table, rows in pruned.as_json().items():
        PRUNED.labels(table=table).inc(rows)
    return pruned


def _delete_older(
    database: Database,
    table: Table,
    key: Column[object],
    stamp: Column[datetime],
    now: datetime,
    days: int,
) -> int:
    if days <= 0:
        return 0  # kept forever
    cutoff = now - timedelta(days=days)
    total = 0
    while True:
        with database.begin() as connection:
            batch = select(key).where(stamp < cutoff).limit(BATCH_ROWS)
            deleted = connection.execute(delete(table).where(key.in_(batch))).rowcount
        total += deleted
        if deleted < BATCH_ROWS:
            return total


def _delete_expired_jti(database: Database, now: datetime) -> int:
    """A jti is kept until its token's exp plus the clock-skew leeway (set by the replay store):
    after that the token is refused as expired anyway, so the row protects nothing."""
    with database.begin() as connection:
        return int(connection.execute(delete(seen_jti).where(seen_jti.c.expires_at < now)).rowcount)


class Pruner:
    """Automatic pruning: `poke()` (called by requests) starts one background prune when the
    last one started at least `prune_interval_seconds` ago in this process; otherwise it returns
    at once. A failed prune is logged and retried after the next interval."""

    def __init__(
        self,
        database: Database | None,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.database = database
        self.settings = settings
        self._clock = clock
        self._now = now
        self._last = -math.inf
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        interval = self.settings.prune_interval_seconds
        if self.database is None or interval <= 0 or self._clock() - self._last < interval:
            return
        if self.database.in_memory:
            # Bounded by the process's life; and its one shared connection must not be used by
            # a second background thread (a pool reset there would roll back another's write).
            return
        with self._lock:
            started = self._clock()
            if started - self._last < interval or (self._thread and self._thread.is_alive()):
                return
            self._last = started
            # Started here, in the worker that serves the request: never in a forking master.
            self._thread = threading.Thread(target=self._run, name="retention-prune", daemon=True)
            self._thread.start()

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for a running prune to finish (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        assert self.database is not None
        try:
            pruned = prune(self.database, self.settings, self._now())
        except (SQLAlchemyError, OSError) as exc:
            log.warning("retention prune failed, database unavailable: %s", type(exc).__name__)
            return
        if any(pruned.as_json().values()):
            log.info("retention prune", extra={"pruned": pruned.as_json()})
