"""Reading a CDS Hooks request body into a HookRequest, with a clear 400 for what is wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .domain.fhirdata import Malformed, codings, parse_date
from .errors import BadRequest

HOOK_CONTEXT_FIELDS: dict[str, tuple[str, ...]] = {
    # Fields the evaluation needs; others (userId, encounterId) are read when present.
    "order-select": ("patientId", "draftOrders", "selections"),
    "order-sign": ("patientId", "draftOrders"),
}

HOOK_INSTANCE_MAX_CHARS = 128
"""A hookInstance is a UUID (36 characters); anything longer than this, or outside printable ASCII,
is refused: it is logged with every hook call and stored with every issued card."""
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def hook_instance_problem(value: str) -> str | None:
    """Why a hookInstance is refused (400), or None. Shared with `cds-service validate`."""
    if len(value) > HOOK_INSTANCE_MAX_CHARS:
        return f"longer than {HOOK_INSTANCE_MAX_CHARS} characters (a UUID has 36)"
    if not _PRINTABLE_ASCII.fullmatch(value):
        return "holds characters outside printable ASCII (a UUID is hexadecimal digits and '-')"
    return None


def is_uuid(value: str) -> bool:
    """The form CDS Hooks gives hookInstance; other short values are accepted and counted."""
    return bool(_UUID.fullmatch(value))


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
        raise BadRequest("The request body is empty; a CDS Hooks request (JSON object) is "
                         "required.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = exc.args[0] if exc.args else exc
        raise BadRequest(f"The request body is not valid JSON ({reason}).") from None


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise BadRequest(f"Missing required field '{path}'.", [path])
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadRequest(f"Field '{path}' must be of type {_json_type(names)}.", [path])
    return value


def _json_type(python_name: str) -> str:
    return (python_name.replace("dict", "object").replace("list", "array")
            .replace("str", "string"))


def read_hook_request(doc: Any, expected_hook: str) -> HookRequest:
    """Check the envelope and the hook context the evaluation depends on."""
    if not isinstance(doc, dict):
        raise BadRequest("The request body must be a JSON object.")
    hook = _require(doc, "hook", str, "hook")
    hook_instance = _require(doc, "hookInstance", str, "hookInstance")
    problem = hook_instance_problem(hook_instance)
    if problem:
        raise BadRequest(f"Field 'hookInstance' is {problem}.", ["hookInstance"])
    context = _require(doc, "context", dict, "context")
    if hook != expected_hook:
        raise BadRequest(f"This service answers the '{expected_hook}' hook; the request's 'hook' "
                         "names another.", ["hook"])
    for field in HOOK_CONTEXT_FIELDS.get(hook, ()):
        kind: type = list if field == "selections" else dict if field == "draftOrders" else str
        _require(context, field, kind, f"context.{field}")
    if "draftOrders" in context:
        _check_draft_orders(context["draftOrders"])
    if hook == "order-select" and not all(isinstance(s, str) for s in context["selections"]):
        raise BadRequest("Every entry of 'context.selections' must be a string like "
                         "'MedicationRequest/123'.", ["context.selections"])
    prefetch = doc.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise BadRequest("Field 'prefetch' must be an object.", ["prefetch"])
    fhir_server = doc.get("fhirServer")
    if fhir_server is not None and not isinstance(fhir_server, str):
        raise BadRequest("Field 'fhirServer' must be a string (URL).", ["fhirServer"])
    authorization = doc.get("fhirAuthorization")
    if authorization is not None:
        if not isinstance(authorization, dict):
            raise BadRequest("Field 'fhirAuthorization' must be an object.", ["fhirAuthorization"])
        if fhir_server is None:
            raise BadRequest("'fhirAuthorization' requires 'fhirServer'.", ["fhirServer"])
    return HookRequest(hook, hook_instance, context, prefetch, fhir_server, authorization, doc)


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
            raise BadRequest(f"'{where}.resource' must be a FHIR resource (an object with a "
                             "resourceType).", [f"{where}.resource"])
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
        dates = [(f"{where}.event[{e}]", v) for e, v in enumerate(events)] \
            if isinstance(events, list) else []
        repeat = timing.get("repeat")
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        if isinstance(bounds, dict) and "start" in bounds:
            dates.append((f"{where}.repeat.boundsPeriod.start", bounds["start"]))
        for at, value in dates:
            if parse_date(value) is None:
                raise BadRequest(f"'{at}' is not a FHIR date; the planned start of the order "
                                 "cannot be read.", [at])
