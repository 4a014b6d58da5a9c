"""The HTTP layer: the only module that imports flask. Parse, dispatch, serialise; nothing
clinical."""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from .domain.terminology import all_value_sets
from .engine import answer
from .errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unavailable,
    operation_outcome,
)
from .feedback import accept_feedback, utc_now
from .hook_request import is_uuid, parse_json, read_hook_request
from .observability import (
    FEEDBACK,
    HOOK_INSTANCE_NOT_UUID,
    HOOK_LATENCY,
    loggable,
    metrics_exposition,
    record_hook,
)
from .services import SERVICES, SERVICES_BY_ID

log = logging.getLogger(__name__)
api = Blueprint("cds", __name__)
JSON = "application/json"


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype=JSON)


def today() -> date:
    """Today in UTC: only used when an order has neither a start date nor authoredOn."""
    return datetime.now(UTC).date()


@api.get("/cds-services")
def discovery() -> Response:
    return json_response({"services": [service.discovery() for service in SERVICES]})


@api.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        raise NotFound("No CDS service with this id.")
    started = time.perf_counter()
    hook_instance: str | None = None
    try:
        hook_request = read_hook_request(parse_json(request.get_data(cache=False)), service.hook)
        hook_instance = hook_request.hook_instance
        if not is_uuid(hook_instance):
            HOOK_INSTANCE_NOT_UUID.inc()
        fetcher = current_app.extensions.get("cds_fetcher")
        terminology = current_app.extensions.get("cds_terminology")
        result = answer(hook_request, service, today(), fetcher, terminology)
    except ServiceError as exc:
        _log_hook(service.id, hook_instance, exc.status, started, code=exc.issue_code)
        raise
    cards = result.body["cards"]
    audit = current_app.extensions.get("cds_audit")
    if audit is not None:
        audit.submit(
            service.id, hook_request.hook_instance, cards, utc_now(), result.suggestion_checks
        )
    record_hook(service.id, result.topics, result.origin)
    _prune_when_due()
    _log_hook(
        service.id,
        hook_instance,
        200,
        started,
        dataOrigin={key: origin.value for key, origin in result.origin.items()},
        topics=[f"{topic}:{indicator}" for topic, indicator in result.topics],
    )
    return json_response(result.body)


def _log_hook(
    service_id: str, hook_instance: str | None, status: int, started: float, **fields: Any
) -> None:
    """One JSON log line and one latency sample per hook call: identifiers, never content."""
    seconds = time.perf_counter() - started
    HOOK_LATENCY.labels(service=service_id, status=str(status)).observe(seconds)
    log.info(
        "hook answered" if status == 200 else "hook refused",
        extra={
            "hookInstance": loggable(hook_instance),
            "service": service_id,
            "status": status,
            "durationMs": round(seconds * 1000, 2),
            **fields,
        },
    )


@api.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str) -> Response:
    """Store feedback (400 if invalid, 503 if the database is unavailable); the body is `{}`."""
    if service_id not in SERVICES_BY_ID:
        raise NotFound("No CDS service with this id.")
    database = current_app.extensions.get("cds_db")
    if database is None:
        raise Unavailable("Feedback storage is not configured.")
    try:
        body = parse_json(request.get_data(cache=False))
        items, stored = accept_feedback(database, service_id, body, utc_now())
    except BadRequest:
        FEEDBACK.labels(outcome="invalid").inc()
        raise
    except Unavailable:
        FEEDBACK.labels(outcome="unavailable").inc()
        raise
    _prune_when_due()
    FEEDBACK.labels(outcome="stored").inc(stored)
    FEEDBACK.labels(outcome="duplicate").inc(items - stored)
    log.info("feedback stored", extra={"service": service_id, "items": items, "new": stored})
    return json_response({})


def _prune_when_due() -> None:
    """Start the retention prune when it is due (returns at once; the prune runs on a thread)."""
    pruner = current_app.extensions.get("cds_pruner")
    if pruner is not None:
        pruner.poke()


@api.get("/healthz", provide_automatic_options=False)
def healthz() -> Response:
    """Liveness: the process answers HTTP. Nothing else is checked (no restart for a DB outage)."""
    return json_response({"status": "ok"})


@api.get("/readyz", provide_automatic_options=False)
def readyz() -> Response:
    """Readiness: the database answers, the value sets are loaded and the warm-up (everything
    a first hook call would build) is done; 503 names what is not."""
    checks: dict[str, dict[str, Any]] = {}
    database = current_app.extensions.get("cds_db")
    try:
        if database is None:
            raise RuntimeError("not configured")
        database.ping()
        checks["database"] = {"ok": True}
    except Exception as exc:  # any failure means not ready
        checks["database"] = {"ok": False, "detail": f"unreachable ({type(exc).__name__})"}
    value_sets = all_value_sets()
    checks["valueSets"] = {"ok": bool(value_sets), "detail": f"{len(value_sets)} loaded"}
    warm = current_app.extensions.get("cds_warm")
    checks["warm"] = {
        "ok": bool(warm and warm.ok),
        "detail": warm.detail if warm is not None else "not warmed up",
    }
    ready = all(check["ok"] for check in checks.values())
    return json_response(
        {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
    )


@api.get("/metrics", provide_automatic_options=False)
def metrics() -> Response:
    """Prometheus exposition (no patient data: services, topics, outcomes and reasons only)."""
    body, content_type = metrics_exposition()
    return Response(body, status=200, content_type=content_type)


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as an OperationOutcome; no stack trace ever reaches a client."""

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return json_response(exc.outcome(), exc.status)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        err = PayloadTooLarge(
            f"The request body exceeds the limit of {app.config['MAX_CONTENT_LENGTH']} bytes."
        )
        return json_response(err.outcome(), err.status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.code or 500, "processing")
        body = operation_outcome("error", code, exc.description or exc.name)
        response = json_response(body, exc.code or 500)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))  # RFC 9110 15.5.6
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        body = operation_outcome(
            "fatal", "exception", "Internal error; the request was not evaluated."
        )
        return json_response(body, 500)
