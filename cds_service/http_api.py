"""The HTTP layer: the only module that imports flask. Parse, dispatch, serialise; nothing clinical."""

from __future__ import annotations

import logging
from datetime import date, datetime, timezone
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .engine import answer
from .errors import NotFound, PayloadTooLarge, ServiceError, Unavailable, operation_outcome
from .feedback import accept_feedback, utc_now
from .hook_request import parse_json, read_hook_request
from .services import SERVICES, SERVICES_BY_ID

log = logging.getLogger(__name__)
api = Blueprint("cds", __name__)
JSON = "application/json"


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype=JSON)


def today() -> date:
    """Today in UTC: only used when an order has neither a start date nor authoredOn."""
    return datetime.now(timezone.utc).date()


@api.get("/cds-services")
def discovery() -> Response:
    return json_response({"services": [service.discovery() for service in SERVICES]})


@api.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        raise NotFound(f"No CDS service with id '{service_id}'.")
    hook_request = read_hook_request(parse_json(request.get_data(cache=False)), service.hook)
    fetcher = current_app.extensions.get("cds_fetcher")
    result = answer(hook_request, service, today(), fetcher)
    audit = current_app.extensions.get("cds_audit")
    if audit is not None:
        audit.submit(service.id, hook_request.hook_instance, result.body["cards"], utc_now())
    return json_response(result.body)


@api.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str) -> Response:
    """Store feedback (400 if invalid, 503 if the database is unavailable); the body is `{}`."""
    if service_id not in SERVICES_BY_ID:
        raise NotFound(f"No CDS service with id '{service_id}'.")
    database = current_app.extensions.get("cds_db")
    if database is None:
        raise Unavailable("Feedback storage is not configured.")
    accept_feedback(database, service_id, parse_json(request.get_data(cache=False)), utc_now())
    return json_response({})


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as an OperationOutcome; no stack trace ever reaches a client."""

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return json_response(exc.outcome(), exc.status)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        err = PayloadTooLarge(
            f"The request body exceeds the limit of {app.config['MAX_CONTENT_LENGTH']} bytes.")
        return json_response(err.outcome(), err.status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(exc.code or 500, "processing")
        body = operation_outcome("error", code, exc.description or exc.name)
        return json_response(body, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        body = operation_outcome("fatal", "exception", "Internal error; the request was not evaluated.")
        return json_response(body, 500)
