"""Errors that know their HTTP status and their OperationOutcome body."""

from __future__ import annotations

from typing import Any


def operation_outcome(
    severity: str, code: str, text: str, expression: list[str] | None = None
) -> dict[str, Any]:
    """A minimal FHIR R4 OperationOutcome with one issue."""
    issue: dict[str, Any] = {
        "severity": severity,
        "code": code,
        "diagnostics": text,
        "details": {"text": text},
    }
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class ServiceError(Exception):
    """An error a client should see: status, FHIR issue code and a plain message (no internals)."""

    status = 400
    issue_code = "invalid"

    def __init__(self, message: str, expression: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression

    def outcome(self) -> dict[str, Any]:
        return operation_outcome("error", self.issue_code, self.message, self.expression)


class BadRequest(ServiceError):
    status = 400
    issue_code = "invalid"


class NotFound(ServiceError):
    status = 404
    issue_code = "not-found"


class PreconditionFailed(ServiceError):
    """412: data the evaluation needs could not be obtained (CDS Hooks prefetch rules)."""

    status = 412
    issue_code = "incomplete"


class PayloadTooLarge(ServiceError):
    status = 413
    issue_code = "too-costly"


class Unauthorized(ServiceError):
    """401 with no detail: the client learns nothing about why its token was refused."""

    status = 401
    issue_code = "security"

    def __init__(self) -> None:
        super().__init__("Unauthorized")


class Unavailable(ServiceError):
    status = 503
    issue_code = "transient"
