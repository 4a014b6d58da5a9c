"""Logs and metrics: one JSON object per log line, Prometheus metrics that work under gunicorn.

What may be logged is decided here and in the few `log.*` calls of the package: identifiers of
the call (hookInstance, service, card topics, statuses, reasons), never request content. Exception
messages can carry request content (a bad date, a name), so tracebacks are logged as frames and
exception types only.

Metrics: with PROMETHEUS_MULTIPROC_DIR set (as `cds-service serve` does) every gunicorn worker
writes its samples to that folder and `/metrics` on any worker reports the sum over all workers.
"""

from __future__ import annotations

import logging
import logging.config
import os
import traceback
from collections.abc import Container, Iterable, Mapping
from types import TracebackType
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pythonjsonlogger.orjson import OrjsonFormatter

from .origin import ORIGIN_LABELS, Origin

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOG_LEVEL_ENV = "CDS_LOG_LEVEL"

# ---------------------------------------------------------------------------------------------
# Metrics (names prefixed cds_; counters get the _total suffix from prometheus-client).

HOOK_LATENCY = Histogram(
    "cds_hook_request_duration_seconds",
    "Time to answer a hook call (parse, evaluate, serialise), per service and HTTP status.",
    ["service", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CARDS = Counter(
    "cds_cards",
    "Cards returned, by service, card topic and indicator.",
    ["service", "topic", "indicator"],
)
PREFETCH_KEYS = Counter(
    "cds_prefetch_keys",
    "Prefetch keys used by alemtuzumab calls, by where the data came from "
    "(prefetch, prefetch-null, fhir-server, fhir-server-paged).",
    ["origin"],
)
FHIR_FETCHES = Counter(
    "cds_fhir_fetches",
    "Prefetch keys fetched from the EHR's FHIR server, by outcome (unfinished: past the "
    "deadline, or abandoned after another key failed).",
    ["outcome"],
)
TERMINOLOGY_LOOKUPS = Counter(
    "cds_terminology_lookups",
    "Terminology-server questions (one code under one value-set root), by outcome: member and "
    "not-member (asked), cached (answered from the cache), failed (error or unreadable answer) "
    "and unfinished (past the deadline); failed and unfinished use the local answer.",
    ["outcome"],
)
FEEDBACK = Counter(
    "cds_feedback",
    "Feedback items and posts by outcome: stored and duplicate count items; invalid and "
    "unavailable count posts.",
    ["outcome"],
)
AUTH_FAILURES = Counter("cds_auth_failures", "EHR JWTs refused, by reason.", ["reason"])
AUDIT_DROPPED = Counter(
    "cds_card_audit_dropped", "Issued-card audit rows dropped (database unavailable or queue full)."
)
HOOK_INSTANCE_NOT_UUID = Counter(
    "cds_hook_instance_not_uuid",
    "Hook calls accepted whose hookInstance is not a UUID (CDS Hooks types it as one; a short "
    "printable value is answered anyway, and counted here to find the integration).",
)
PRUNED = Counter(
    "cds_pruned_rows",
    "Rows removed by retention pruning, by table (issued_cards, feedback, seen_jti).",
    ["table"],
)
PRUNED_TABLES = ("issued_cards", "feedback", "seen_jti")

FEEDBACK_OUTCOMES = ("stored", "duplicate", "invalid", "unavailable")
FETCH_OUTCOMES = ("ok", "failed", "unfinished")
TERMINOLOGY_OUTCOMES = ("member", "not-member", "cached", "failed", "unfinished")
PREFETCH_ORIGINS = ORIGIN_LABELS


def initialise_labels(auth_reasons: Iterable[str], service_ids: Iterable[str] = ()) -> None:
    """Create every fixed label set at zero, so dashboards see a series before the first event.

    Also each service's latency histogram for status 200: its first sample would otherwise
    create this worker's histogram file (about 7 ms) during the first patient's call."""
    for service_id in service_ids:
        HOOK_LATENCY.labels(service=service_id, status="200")
    for reason in auth_reasons:
        AUTH_FAILURES.labels(reason=reason)
    for outcome in FEEDBACK_OUTCOMES:
        FEEDBACK.labels(outcome=outcome)
    for outcome in FETCH_OUTCOMES:
        FHIR_FETCHES.labels(outcome=outcome)
    for outcome in TERMINOLOGY_OUTCOMES:
        TERMINOLOGY_LOOKUPS.labels(outcome=outcome)
    for origin in PREFETCH_ORIGINS:
        PREFETCH_KEYS.labels(origin=origin)
    for table in PRUNED_TABLES:
        PRUNED.labels(table=table)


def record_hook(
    service_id: str, topics: Iterable[tuple[str, str]], origin: Mapping[str, Origin]
) -> None:
    """Count the cards of one answered hook call, given as (topic, indicator) pairs, and where
    its prefetch data came from."""
    for topic, indicator in topics:
        CARDS.labels(service=service_id, topic=topic, indicator=indicator).inc()
    for value in origin.values():
        PREFETCH_KEYS.labels(origin=value.label).inc()


def metrics_exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition: summed over all gunicorn workers in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Gunicorn child_exit hook: the dead worker's live gauges are dropped (counters are kept)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------------------------
# Logs


class SafeJsonFormatter(OrjsonFormatter):
    """One JSON object per line. Tracebacks keep frames and exception types, never messages:
    an exception message may quote request content (a name, a date, a token)."""

    def formatException(self, ei: Any) -> str:
        exc_type, exc_value, tb = ei
        return "".join(_frames_and_types(exc_type, exc_value, tb))


def _frames_and_types(
    exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: TracebackType | None
) -> list[str]:
    """Like traceback.format_exception, oldest cause first, with every message replaced."""
    chain: list[tuple[BaseException, TracebackType | None]] = []
    current, current_tb = exc_value, tb
    while current is not None and all(current is not seen for seen, _ in chain):
        chain.append((current, current_tb))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
        current_tb = current.__traceback__ if current is not None else None
    lines: list[str] = []
    for exc, exc_tb in reversed(chain):
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_list(traceback.extract_tb(exc_tb)))
        lines.append(f"{type(exc).__module__}.{type(exc).__qualname__} (message withheld)\n")
    if not chain and exc_type is not None:
        lines.append(f"{exc_type.__qualname__} (message withheld)\n")
    return lines


def loggable(value: object, limit: int = 128) -> str | None:
    """A client-chosen value (hookInstance, an unverified `iss`) as a log line may carry it: at
    most `limit` characters of it, anything but printable ASCII escaped (no control characters,
    no look-alike text), a longer value cut with the count of characters left out."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    escaped = "".join(map(_escape, text[:limit]))
    if len(text) > limit:
        escaped += f"...(+{len(text) - limit} characters)"
    return escaped


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    return char if " " <= char <= "~" else char.encode("unicode_escape").decode("ascii")


def route_label(path: str, service_ids: Container[str]) -> str:
    """The path as a log line may show it: one of this service's routes, or a placeholder (a path
    a client made up may hold a name or an MRN). `service_ids` come from the caller, so logging
    stays below the services table."""
    if path in ("/cds-services", "/healthz", "/readyz", "/metrics"):
        return path
    parts = path.split("/")
    if len(parts) in (3, 4) and parts[1] == "cds-services":
        service = parts[2] if parts[2] in service_ids else "(unknown service)"
        if len(parts) == 3:
            return f"/cds-services/{service}"
        if parts[3] == "feedback":
            return f"/cds-services/{service}/feedback"
    return "(other path)"


LOG_FIELDS = ("levelname", "name", "process", "message")


def logging_config(level: str | None = None) -> dict[str, Any]:
    """A dictConfig for the whole process (ours, gunicorn's, libraries'): JSON lines on stderr.

    Libraries that would write URLs or SQL with request values (urllib3, sqlalchemy) are held at
    WARNING whatever the level."""
    level = (level or os.environ.get(LOG_LEVEL_ENV) or "INFO").upper()
    formatter = {
        "()": f"{__name__}.SafeJsonFormatter",
        "fmt": list(LOG_FIELDS),
        "rename_fields": {"levelname": "level", "name": "logger"},
        "timestamp": "time",  # ISO 8601, UTC
    }
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    quiet = {"level": "WARNING", "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            # gunicorn's access lines (cds_service.server: route, status, duration) are DEBUG.
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
            "urllib3": quiet,
            "sqlalchemy": quiet,
            "werkzeug": quiet,
        },
    }


def configure_logging(level: str | None = None) -> None:
    logging.config.dictConfig(logging_config(level))
