"""CDS Hooks feedback: validate a post, store it durably and idempotently, audit issued cards,
report.

No flask here: `http_api` parses the body and calls `accept_feedback` / `record_issued_cards`;
`cds-service feedback-report` calls `feedback_report`. Feedback joins to a topic through the
issued-card audit (card uuid -> topic), which holds no patient data.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .cards import card_topic
from .errors import BadRequest, Unavailable
from .observability import AUDIT_DROPPED
from .storage import Database, feedback, insert_ignore, issued_cards

log = logging.getLogger(__name__)

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
UNKNOWN_CARD = "(unknown card)"

# Limits on what a feedback post may hold (characters / items). Generous for any real EHR (coded
# reasons are short; a comment of 10,000 characters is several pages), but one post can no longer
# store megabytes per row. README "Feedback" lists them.
MAX_ITEMS_PER_POST = 1000
MAX_SUGGESTIONS_PER_ITEM = 100
MAX_SYSTEM_CHARS = 1024
MAX_CODE_CHARS = 1024
MAX_TEXT_CHARS = 10_000
MAX_TIMESTAMP_CHARS = 128

_CODING: dict[str, Any] = {
    "type": "object",
    # The Sandbox sends reason without display, so display is optional.
    "required": ["system", "code"],
    "properties": {
        "system": {"type": "string", "minLength": 1, "maxLength": MAX_SYSTEM_CHARS},
        "code": {"type": "string", "minLength": 1, "maxLength": MAX_CODE_CHARS},
        "display": {"type": "string", "maxLength": MAX_TEXT_CHARS},
    },
}

FEEDBACK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "CDS Hooks 2.0 feedback request",
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,  # an empty post is a client bug; openapi.yaml says the same
            "maxItems": MAX_ITEMS_PER_POST,
            "items": {
                "type": "object",
                "required": ["card", "outcome", "outcomeTimestamp"],
                "properties": {
                    "card": {"type": "string", "pattern": UUID_PATTERN, "maxLength": 36},
                    "outcome": {"enum": ["accepted", "overridden"]},
                    "acceptedSuggestions": {
                        "type": "array",
                        "maxItems": MAX_SUGGESTIONS_PER_ITEM,
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {
                                "id": {"type": "string", "pattern": UUID_PATTERN, "maxLength": 36}
                            },
                        },
                    },
                    "overrideReason": {
                        "type": "object",
                        "properties": {
                            "reason": _CODING,
                            "userComment": {"type": "string", "maxLength": MAX_TEXT_CHARS},
                        },
                        "anyOf": [
                            {"required": ["reason"]},
                            {
                                "required": ["userComment"],
                                "properties": {"userComment": {"minLength": 1}},
                            },
                        ],
                    },
                    "outcomeTimestamp": {
                        "type": "string",
                        "format": "date-time",
                        "maxLength": MAX_TIMESTAMP_CHARS,
                    },
                },
                # accepted -> at least one accepted suggestion (CDS Hooks 2.0 "Feedback").
                "if": {"required": ["outcome"], "properties": {"outcome": {"const": "accepted"}}},
                "then": {
                    "required": ["acceptedSuggestions"],
                    "properties": {"acceptedSuggestions": {"minItems": 1}},
                },
            },
        },
    },
}

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time with an offset (checked here: jsonschema needs an extra package for
    it)."""
    if not isinstance(value, str):
        return True
    try:
        canonical_timestamp(value)
    except ValueError:
        return False
    return True


def canonical_timestamp(value: str) -> str:
    """An RFC 3339 date-time as the same instant in UTC, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (trailing
    zeros dropped, digits beyond the microsecond too): `Z`, `+00:00`, `.5` and `.500` then name one
    feedback item. ValueError when it is not an RFC 3339 date-time with an offset."""
    match = RFC3339.match(value)
    if not match or len(value) > MAX_TIMESTAMP_CHARS:
        raise ValueError("not an RFC 3339 date-time")
    fraction = match.group(1) or ""
    text = value[:19] + fraction[:7] + value[match.end(1) if match.group(1) else 19 :]
    instant = datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
    out = instant.strftime("%Y-%m-%dT%H:%M:%S")
    if instant.microsecond:
        out += f".{instant.microsecond:06d}".rstrip("0")
    return out + "Z"


_VALIDATOR = Draft202012Validator(FEEDBACK_SCHEMA, format_checker=_FORMATS)


@dataclass(frozen=True)
class FeedbackItem:
    """One validated feedback item, with the fingerprint that makes a repeated post idempotent."""

    card: str
    outcome: str
    accepted_suggestions: tuple[str, ...]
    reason_system: str | None
    reason_code: str | None
    reason_display: str | None
    comment: str | None
    outcome_timestamp: str
    fingerprint: str


def _path(parts: Iterable[Any]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _describe(error: ValidationError) -> tuple[str, str]:
    """(JSON path, message) for one schema error, naming the missing field itself when one is."""
    path = _path(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        # The stubs allow Unset; an error from validation carries the keyword's value, here a list.
        required = cast("list[Any]", error.validator_value)
        missing = [k for k in required if k not in error.instance]
        if missing:
            path = f"{path}.{missing[0]}"
            if missing[0] == "acceptedSuggestions":
                return path, "an accepted outcome needs acceptedSuggestions (at least one)"
            return path, "is required"
    if (
        error.validator == "minItems"
        and error.absolute_path
        and error.absolute_path[-1] == "acceptedSuggestions"
    ):
        return path, "an accepted outcome needs at least one accepted suggestion"
    if (
        error.validator == "anyOf"
        and error.absolute_path
        and error.absolute_path[-1] == "overrideReason"
    ):
        return path, "an override reason needs a reason (a Coding) or a non-empty userComment"
    if (
        error.validator == "pattern"
        and error.validator_value == UUID_PATTERN
        or (error.validator == "maxLength" and error.validator_value == 36)
    ):
        return path, "must be a UUID"
    if error.validator == "format":
        return path, "must be an RFC 3339 date-time with a time zone, e.g. 2021-12-11T10:05:31Z"
    if error.validator in ("maxLength", "maxItems"):
        limit = error.validator_value
        unit = "characters" if error.validator == "maxLength" else "items"
        return path, f"longer than the limit of {limit} {unit}"
    if error.validator == "enum":
        allowed = cast("list[Any]", error.validator_value)  # set by validation, as above
        return path, f"must be one of {', '.join(map(str, allowed))}"
    # Never jsonschema's own message: it quotes the posted value.
    if error.validator == "type":
        return path, f"must be of type {error.validator_value}"
    if error.validator == "minLength":
        return path, "must not be empty"
    if error.validator == "minItems":
        return path, f"needs at least {error.validator_value} item(s)"
    return path, f"is not valid ({error.validator})"


def fingerprint(service_id: str, item: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of (service id, item): callers pass canonical values (uuids
    lower-cased, suggestions sorted, the timestamp in UTC), so the same item posted with an
    upper-case uuid or `+00:00` instead of `Z` is stored once."""
    canonical = orjson.dumps([service_id, item], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def validate_feedback(service_id: str, body: Any) -> list[FeedbackItem]:
    """Every item of a feedback post, or a 400 naming the JSON path of each problem."""
    errors = sorted(_VALIDATOR.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        described = list(dict.fromkeys(_describe(e) for e in errors))
        message = "Invalid feedback: " + "; ".join(f"{p}: {m}" for p, m in described[:5])
        if len(described) > 5:
            message += f"; and {len(described) - 5} more"
        raise BadRequest(message, list(dict.fromkeys(p for p, _ in described)))
    items = []
    for raw in body["feedback"]:
        reason = (raw.get("overrideReason") or {}).get("reason") or {}
        canonical = {
            "card": raw["card"].lower(),
            "outcome": raw["outcome"],
            "acceptedSuggestions": sorted(
                {s["id"].lower() for s in raw.get("acceptedSuggestions", ())}
            ),
            "reason": [reason.get("system"), reason.get("code"), reason.get("display")],
            "comment": (raw.get("overrideReason") or {}).get("userComment"),
            "outcomeTimestamp": canonical_timestamp(raw["outcomeTimestamp"]),
        }
        items.append(
            FeedbackItem(
                card=canonical["card"],
                outcome=canonical["outcome"],
                accepted_suggestions=tuple(canonical["acceptedSuggestions"]),
                reason_system=reason.get("system"),
                reason_code=reason.get("code"),
                reason_display=reason.get("display"),
                comment=canonical["comment"],
                outcome_timestamp=canonical["outcomeTimestamp"],
                fingerprint=fingerprint(service_id, canonical),
            )
        )
    return items


def store_feedback(
    database: Database, service_id: str, items: list[FeedbackItem], now: datetime
) -> int:
    """Store all items in one transaction (all or nothing); returns how many were new.

    A database that is down or locked is a 503 so the EHR retries; nothing is silently dropped."""
    rows = [
        {
            "fingerprint": item.fingerprint,
            "service_id": service_id,
            "card_uuid": item.card,
            "outcome": item.outcome,
            "accepted_suggestions": orjson.dumps(list(item.accepted_suggestions)).decode()
            if item.accepted_suggestions
            else None,
            "override_reason_system": item.reason_system,
            "override_reason_code": item.reason_code,
            "override_reason_display": item.reason_display,
            "override_comment": item.comment,
            "outcome_timestamp": item.outcome_timestamp,
            "received_at": now,
        }
        for item in items
    ]
    try:
        with database.begin() as connection:
            return insert_ignore(connection, feedback, rows)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("feedback not stored, database unavailable: %s", type(exc).__name__)
        raise Unavailable("Feedback could not be stored right now; please retry later.") from None


def accept_feedback(
    database: Database, service_id: str, body: Any, now: datetime
) -> tuple[int, int]:
    """Validate then store a feedback post; 400 stores nothing, 503 stores nothing.
    Returns (items in the post, items new to the store)."""
    items = validate_feedback(service_id, body)
    return len(items), store_feedback(database, service_id, items, now)


def audit_rows(
    service_id: str,
    hook_instance: str,
    cards: list[dict[str, Any]],
    now: datetime,
    suggestion_checks: Iterable[tuple[str, str]] = (),
) -> list[dict[str, Any]]:
    """Audit rows for issued cards: uuid, service, topic, indicator, hookInstance, time; no patient
    data. Each grouped card's suggestion (`suggestion_checks`: uuid, check) gets a row too
    (indicator SUGGESTION_ROW, topic = the check), so the suggestion taken is counted per check."""
    rows = []
    for card in cards:
        uuid = card.get("uuid")
        if not isinstance(uuid, str):
            continue  # a card without uuid can never receive feedback
        topic = card_topic(card)
        rows.append(
            {
                "card_uuid": uuid.lower(),
                "service_id": service_id,
                "topic": topic,
                "indicator": str(card.get("indicator", "")),
                "hook_instance": hook_instance,
                "issued_at": now,
            }
        )
    rows += [
        {
            "card_uuid": suggestion_uuid.lower(),
            "service_id": service_id,
            "topic": check,
            "indicator": SUGGESTION_ROW,
            "hook_instance": hook_instance,
            "issued_at": now,
        }
        for suggestion_uuid, check in dict(suggestion_checks).items()
    ]
    return rows


SUGGESTION_ROW = "suggestion"
"""The indicator column of an audit row that records a suggestion, not a card."""


def record_issued_cards(
    database: Database | None,
    service_id: str,
    hook_instance: str,
    cards: list[dict[str, Any]],
    now: datetime,
    suggestion_checks: Iterable[tuple[str, str]] = (),
) -> None:
    """Audit each issued card now (best effort: a database failure is logged, never raised)."""
    if database is None or not cards:
        return
    _write_audit(database, audit_rows(service_id, hook_instance, cards, now, suggestion_checks))


def _write_audit(database: Database, rows: list[dict[str, Any]]) -> bool:
    try:
        with database.begin() as connection:
            insert_ignore(connection, issued_cards, rows)
        return True
    except (SQLAlchemyError, OSError) as exc:
        log.warning(
            "issued-card audit dropped (%d cards), database unavailable: %s",
            len(rows),
            type(exc).__name__,
        )
        return False


class CardAudit:
    """Writes the issued-card audit off the request path, so a slow or locked database never
    delays a hook answer. A bounded queue feeds one writer thread per process; when the queue is
    full or the database fails, the rows are dropped with a warning and counted in `dropped`."""

    def __init__(self, database: Database | None, max_pending: int = 10_000) -> None:
        self.database = database
        self.dropped = 0
        self._queue: queue.Queue[list[dict[str, Any]]] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(
        self,
        service_id: str,
        hook_instance: str,
        cards: list[dict[str, Any]],
        now: datetime,
        suggestion_checks: Iterable[tuple[str, str]] = (),
    ) -> None:
        if self.database is None or not cards:
            return
        rows = audit_rows(service_id, hook_instance, cards, now, suggestion_checks)
        self._ensure_thread()
        try:
            self._queue.put_nowait(rows)
        except queue.Full:
            self._drop(len(rows))
            log.warning("issued-card audit dropped (%d cards), writer queue full", len(rows))

    def _drop(self, count: int) -> None:
        self.dropped += count
        AUDIT_DROPPED.inc(count)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every submitted row was written or dropped (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def start(self) -> None:
        """Start the writer now (create_app runs in each worker), not in the first hook call;
        it opens no connection until it has rows to write."""
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        # Restarted when needed, so that a process forked after start() gets its own writer.
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="card-audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        assert self.database is not None
        while True:
            batch = [self._queue.get()]
            while len(batch) < 200:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [row for rows in batch for row in rows]
            if not _write_audit(self.database, rows):
                self._drop(len(rows))
            for _ in batch:
                self._queue.task_done()


@dataclass
class TopicReport:
    """Counts for one card topic: issued, accepted, overridden and the override reasons."""

    topic: str
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    """'code (display)' -> count, over overridden feedback with a coded reason."""
    comments: int = 0
    """Overridden feedback with a free-text comment."""

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "issued": self.issued,
            "accepted": self.accepted,
            "overridden": self.overridden,
            "overrideReasons": dict(sorted(self.reasons.items())),
            "comments": self.comments,
        }


@dataclass
class CheckReport:
    """Per check, through the suggestions of grouped cards: how many were offered and taken."""

    check: str
    offered: int = 0
    taken: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "suggestionsOffered": self.offered,
            "suggestionsTaken": self.taken,
        }


def check_report(database: Database) -> list[CheckReport]:
    """Per check: the suggestions grouped cards offered for it and how many accepted feedback
    took (acceptedSuggestions). Raises SQLAlchemyError/OSError when the database is unavailable."""
    reports: dict[str, CheckReport] = {}
    with database.begin() as connection:
        checks = dict(
            connection.execute(
                select(issued_cards.c.card_uuid, issued_cards.c.topic).where(
                    issued_cards.c.indicator == SUGGESTION_ROW
                )
            ).all()
        )
        for check in checks.values():
            reports.setdefault(check, CheckReport(check)).offered += 1
        taken = connection.execute(
            select(feedback.c.accepted_suggestions).where(
                feedback.c.outcome == "accepted", feedback.c.accepted_suggestions.is_not(None)
            )
        )
        for (accepted_json,) in taken:
            for suggestion in orjson.loads(accepted_json):
                check = checks.get(suggestion)
                if check is not None:
                    reports[check].taken += 1
    return sorted(reports.values(), key=lambda r: r.check)


def feedback_report(database: Database) -> list[TopicReport]:
    """Per topic: cards issued and their feedback; feedback for cards never audited is grouped
    under '(unknown card)'. Raises SQLAlchemyError/OSError when the database is unavailable."""
    reports: dict[str, TopicReport] = {}

    def report(topic: str) -> TopicReport:
        return reports.setdefault(topic, TopicReport(topic))

    with database.begin() as connection:
        cards = select(issued_cards.c.topic).where(issued_cards.c.indicator != SUGGESTION_ROW)
        for (topic,) in connection.execute(cards):
            report(topic).issued += 1
        rows = connection.execute(
            select(
                issued_cards.c.topic,
                feedback.c.outcome,
                feedback.c.override_reason_code,
                feedback.c.override_reason_display,
                feedback.c.override_comment,
            ).select_from(
                feedback.outerjoin(issued_cards, feedback.c.card_uuid == issued_cards.c.card_uuid)
            )
        )
        for topic, outcome, code, display, comment in rows:
            entry = report(topic or UNKNOWN_CARD)
            if outcome == "accepted":
                entry.accepted += 1
            elif outcome == "overridden":
                entry.overridden += 1
                if code:
                    key = f"{code} ({display})" if display else code
                    entry.reasons[key] = entry.reasons.get(key, 0) + 1
                if comment:
                    entry.comments += 1
    return sorted(reports.values(), key=lambda r: (r.topic == UNKNOWN_CARD, r.topic))


def format_report(reports: list[TopicReport], checks: Sequence[CheckReport] = ()) -> str:
    """A plain-text table, one row per topic, override reasons listed under their topic; then,
    per check, the suggestions grouped cards offered and how many were taken."""
    if not reports:
        return "No cards issued and no feedback received yet.\n"
    header = ("topic", "issued", "accepted", "overridden", "comments")
    rows = [
        (r.topic, str(r.issued), str(r.accepted), str(r.overridden), str(r.comments))
        for r in reports
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for report, row in zip(reports, rows, strict=True):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        for reason, count in sorted(report.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    override reason {reason}: {count}")
    if checks:
        width = max(len("check"), *(len(c.check) for c in checks))
        lines += ["", f"{'check'.ljust(width)}  offered  taken"]
        lines += [f"{c.check.ljust(width)}  {c.offered:>7}  {c.taken:>5}" for c in checks]
    return "\n".join(lines) + "\n"


def utc_now() -> datetime:
    return datetime.now(UTC)
