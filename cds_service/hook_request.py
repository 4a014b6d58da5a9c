"""Reading a CDS Hooks request body into a HookRequest, with a clear 400 for what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .domain.fhirdata import Malformed, codings, parse_date
from .errors import BadRequest
from .hook_spec import (
    ENVELOPE,
    HOOK_INSTANCE_MAX_CHARS,
    Field,
    fields_for,
    has_type,
    hook_instance_problem,
    is_missing,
    is_uuid,
)

__all__ = [
    "HOOK_INSTANCE_MAX_CHARS",
    "HookRequest",
    "hook_instance_problem",
    "is_uuid",
    "parse_json",
    "read_hook_request",
]


@dataclass(frozen=True)
class HookRequest:
    """The parts of a CDS Hooks call this service uses, as sent (no resource is altered)."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any] | None
    fhir_server: str | None
    fhir_authorization: dict[str, Any] | None
    raw: dict[str, Any]

    @property
    def patient_id(self) -> str:
        return str(self.context["patientId"])

    @property
    def selections(self) -> list[str] | None:
        value = self.context.get("selections")
        return value if isinstance(value, list) else None


def parse_json(body: bytes) -> Any:
    """Parse a request body; invalid JSON or UTF-8 is a 400."""
    if not body or not body.strip():
        raise BadRequest(
            "The request body is empty; a CDS Hooks request (JSON object) is required."
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = exc.args[0] if exc.args else exc
        raise BadRequest(f"The request body is not valid JSON ({reason}).") from None


def _check(holder: dict[str, Any], field: Field) -> Any:
    """The value of one row of hook_spec.FIELDS; a 400 if it is required and missing or if it has
    the wrong JSON type. Returns None for a tolerated field that is absent."""
    path = field.path
    if is_missing(holder, field.name):
        if field.refused_when_missing:
            raise BadRequest(f"Missing required field '{path}'.", [path])
        if field.required_with is not None and not is_missing(holder, field.required_with):
            raise BadRequest(f"'{field.required_with}' requires '{path}'.", [path])
        return None
    value = holder[field.name]
    if not has_type(value, field.json_type):
        raise BadRequest(f"Field '{path}' must be of type {field.json_type}.", [path])
    if field.items is not None and not all(has_type(item, field.items) for item in value):
        raise BadRequest(f"Every entry of '{path}' must be of type {field.items}.", [path])
    return value


def _check_members(holder: dict[str, Any], hook: str | None, parent: str) -> None:
    for field in fields_for(hook, parent):
        value = _check(holder, field)
        if isinstance(value, dict):
            _check_members(value, hook, field.path)


def read_hook_request(doc: Any, expected_hook: str) -> HookRequest:
    """Check the request against hook_spec.FIELDS, in its order, and the draft orders the
    evaluation depends on; the first problem is a 400."""
    if not isinstance(doc, dict):
        raise BadRequest("The request body must be a JSON object.")
    hook_row, instance_row, context_row = ENVELOPE
    hook = _check(doc, hook_row)
    hook_instance = _check(doc, instance_row)
    problem = hook_instance_problem(hook_instance)
    if problem:
        raise BadRequest(f"Field 'hookInstance' is {problem}.", ["hookInstance"])
    context = _check(doc, context_row)
    if hook != expected_hook:
        raise BadRequest(
            f"This service answers the '{expected_hook}' hook; the request's 'hook' names another.",
            ["hook"],
        )
    _check_members(context, hook, "context")
    if "draftOrders" in context:
        _check_draft_orders(context["draftOrders"])
    for field in fields_for(hook, ""):
        if field not in ENVELOPE:
            value = _check(doc, field)
            if isinstance(value, dict):
                _check_members(value, hook, field.path)
    return HookRequest(
        hook,
        hook_instance,
        context,
        doc.get("prefetch"),
        doc.get("fhirServer"),
        doc.get("fhirAuthorization"),
        doc,
    )


def _check_draft_orders(bundle: Any) -> None:
    """draftOrders must be a readable Bundle: an order the service cannot read could be the
    alemtuzumab order, so answering `{"cards": []}` for it would be a silent all-clear."""
    path = "context.draftOrders"
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest(f"'{path}' must be a FHIR Bundle (resourceType 'Bundle').", [path])
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest(f"'{path}.entry' must be an array.", [f"{path}.entry"])
    for i, entry in enumerate(entries):
        where = f"{path}.entry[{i}]"
        if not isinstance(entry, dict):
            raise BadRequest(f"'{where}' must be an object.", [where])
        resource = entry.get("resource")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise BadRequest(
                f"'{where}.resource' must be a FHIR resource (an object with a resourceType).",
                [f"{where}.resource"],
            )
        if resource["resourceType"] == "MedicationRequest":
            _check_order(resource, f"{where}.resource")


def _check_order(order: dict[str, Any], path: str) -> None:
    """The elements that decide whether an order is alemtuzumab and when it starts (T0) must be
    readable: a wrong shape there would silently skip the order or move T0."""
    concept = order.get("medicationCodeableConcept")
    try:
        codings(concept)
    except Malformed as exc:
        where = f"{path}.medicationCodeableConcept"
        raise BadRequest(f"'{where}' cannot be read ({exc}).", [where]) from None
    reference = order.get("medicationReference")
    if reference is not None and not isinstance(reference, dict):
        where = f"{path}.medicationReference"
        raise BadRequest(f"'{where}' must be a Reference (an object).", [where])
    dosages = order.get("dosageInstruction")
    for d, dosage in enumerate(dosages if isinstance(dosages, list) else ()):
        timing = dosage.get("timing") if isinstance(dosage, dict) else None
        if not isinstance(timing, dict):
            continue
        where = f"{path}.dosageInstruction[{d}].timing"
        events = timing.get("event")
        dates = (
            [(f"{where}.event[{e}]", v) for e, v in enumerate(events)]
            if isinstance(events, list)
            else []
        )
        repeat = timing.get("repeat")
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        if isinstance(bounds, dict) and "start" in bounds:
            dates.append((f"{where}.repeat.boundsPeriod.start", bounds["start"]))
        for at, value in dates:
            if parse_date(value) is None:
                raise BadRequest(
                    f"'{at}' is not a FHIR date; the planned start of the order cannot be read.",
                    [at],
                )
