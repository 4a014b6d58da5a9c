"""What is wrong with a hook request an EHR would send: the logic behind `cds-service validate`.

Pure (no I/O, no flask): a parsed JSON document in, a list of Problems out, each with the JSON path
of what it is about, so an implementer can fix an integration before the first real call.

Levels: an `error` is something the CDS Hooks 2.0 specification, the order-select/order-sign hook
definitions or FHIR R4 forbid (the service may refuse the call or be unable to read the evidence).
A `warning` is something the service tolerates but that changes what it can conclude: resources
it reads leniently (a MedicationRequest without `intent`, a Bundle without `type`, ids longer than
R4's 64 characters, as Epic sends them), codings in systems the checks do not read, prefetch keys it
will have to fetch or cannot fetch (and will then answer 412 for an alemtuzumab order).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .domain.terminology import known_systems
from .hook_request import hook_instance_problem, is_uuid
from .models import LENIENT_DEFAULTS, validation_problem
from .services import PREFETCH_TYPES

Level = Literal["error", "warning"]

HOOK_CONTEXT: dict[str, tuple[str, ...]] = {
    # Required context fields per hook (CDS Hooks library: order-select 1.0, order-sign 1.1).
    "order-select": ("userId", "patientId", "selections", "draftOrders"),
    "order-sign": ("userId", "patientId", "draftOrders"),
}
OPTIONAL_CONTEXT: tuple[str, ...] = ("encounterId",)
REFERENCE = re.compile(r"^[\w]+/[\w\-.]+$")
USER_REFERENCE = re.compile(r"^(Practitioner|PractitionerRole)/[\w\-.]+$")
PLAIN_ID = re.compile(r"^[\w\-.]+$")
FHIR_ID_MAX = 64
AUTHORIZATION_FIELDS: tuple[tuple[str, type], ...] = (
    ("access_token", str), ("token_type", str), ("expires_in", int), ("scope", str),
    ("subject", str),
)
# Resource types whose codes the checks read, and where the code sits.
CODED_ELEMENTS: dict[str, tuple[str, ...]] = {
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "MedicationAdministration": ("medicationCodeableConcept",),
    "Medication": ("code",),
    "Observation": ("code",),
    "Immunization": ("vaccineCode",),
    "Condition": ("code",),
}


@dataclass(frozen=True)
class Problem:
    """One finding about a request: how bad, where (JSON path), what."""

    level: Level
    path: str
    message: str

    def line(self) -> str:
        return f"{self.level}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def child(path: str, key: str | int) -> str:
    """The JSON path of a member or an array item."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem("error", path, message))

    def warning(self, path: str, message: str) -> None:
        self.problems.append(Problem("warning", path, message))


def validate_request(doc: Any) -> list[Problem]:
    """Every problem of a CDS Hooks request for order-select / order-sign, in document order."""
    out = _Collector()
    if not isinstance(doc, dict):
        out.error("$", f"the request must be a JSON object, not {_type_name(doc)}")
        return out.problems
    hook = _envelope(doc, out)
    context = doc.get("context")
    if isinstance(context, dict):
        _context(context, hook, out)
    prefetch = doc.get("prefetch")
    if prefetch is not None:
        if isinstance(prefetch, dict):
            _prefetch(prefetch, doc.get("fhirServer"), out)
        else:
            out.error("$.prefetch", f"must be an object, not {_type_name(prefetch)}")
    elif isinstance(hook, str) and hook in HOOK_CONTEXT and not doc.get("fhirServer"):
        out.warning("$", "neither prefetch nor fhirServer: the service will answer 412 for an "
                         "alemtuzumab order")
    return out.problems


def _envelope(doc: dict[str, Any], out: _Collector) -> str | None:
    hook = doc.get("hook")
    if hook is None:
        out.error("$.hook", "required")
    elif not isinstance(hook, str):
        out.error("$.hook", f"must be a string, not {_type_name(hook)}")
        hook = None
    elif hook not in HOOK_CONTEXT:
        out.error("$.hook", f"this service answers order-select and order-sign, not {hook!r}")
    instance = doc.get("hookInstance")
    if instance is None:
        out.error("$.hookInstance", "required")
    elif not isinstance(instance, str):
        out.error("$.hookInstance", f"must be a string (a UUID), not {_type_name(instance)}")
    elif (problem := hook_instance_problem(instance)) is not None:
        out.error("$.hookInstance", f"{problem}: the service answers 400")
    elif not is_uuid(instance):
        out.warning("$.hookInstance", f"not a UUID: {instance!r} (CDS Hooks requires one; the "
                                      "service accepts it and counts it in "
                                      "cds_hook_instance_not_uuid_total)")
    if "context" not in doc or doc["context"] is None:
        out.error("$.context", "required")
    elif not isinstance(doc["context"], dict):
        out.error("$.context", f"must be an object, not {_type_name(doc['context'])}")
    server = doc.get("fhirServer")
    if server is not None:
        if not isinstance(server, str) or not re.match(r"^https?://[^/\s]+", server):
            out.error("$.fhirServer", "must be an absolute URL (https)")
        elif server.startswith("http://"):
            out.warning("$.fhirServer", "plain http: the service only calls http servers that are "
                                        "explicitly allowed (CDS Hooks requires TLS)")
    auth = doc.get("fhirAuthorization")
    if auth is not None:
        if server is None:
            out.error("$.fhirServer", "required when fhirAuthorization is present")
        if not isinstance(auth, dict):
            out.error("$.fhirAuthorization", f"must be an object, not {_type_name(auth)}")
        else:
            for name, kind in AUTHORIZATION_FIELDS:
                path = child("$.fhirAuthorization", name)
                value = auth.get(name)
                if value is None:
                    out.error(path, "required")
                elif not isinstance(value, kind) or isinstance(value, bool):
                    out.error(path, f"must be a {'number' if kind is int else 'string'}, "
                                    f"not {_type_name(value)}")
            if isinstance(auth.get("token_type"), str) and auth["token_type"] != "Bearer":
                out.error("$.fhirAuthorization.token_type", f"must be 'Bearer', not "
                                                            f"{auth['token_type']!r}")
    return hook if isinstance(hook, str) else None


def _context(context: dict[str, Any], hook: str | None, out: _Collector) -> set[str]:
    for name in HOOK_CONTEXT.get(hook or "", ()):
        if context.get(name) is None:
            out.error(child("$.context", name), f"required for the {hook} hook")
    user = context.get("userId")
    if user is not None and (not isinstance(user, str) or not USER_REFERENCE.match(user)):
        out.error("$.context.userId", "must be 'Practitioner/id' or 'PractitionerRole/id', not "
                                      f"{user!r}")
    patient = context.get("patientId")
    if patient is not None and (not isinstance(patient, str) or not PLAIN_ID.match(patient)):
        out.error("$.context.patientId", f"must be a Patient id (not a reference), not {patient!r}")
    encounter = context.get("encounterId")
    if encounter is not None and (not isinstance(encounter, str) or not PLAIN_ID.match(encounter)):
        out.error("$.context.encounterId", f"must be an Encounter id, not {encounter!r}")
    draft_ids: set[str] = set()
    draft = context.get("draftOrders")
    if draft is not None:
        if isinstance(draft, dict) and draft.get("resourceType") == "Bundle":
            draft_ids = _bundle(draft, "$.context.draftOrders", None, out)
        else:
            out.error("$.context.draftOrders", "must be a FHIR Bundle")
            draft = None
    selections = context.get("selections")
    if selections is not None:
        if not isinstance(selections, list):
            out.error("$.context.selections", f"must be an array, not {_type_name(selections)}")
        else:
            if not selections:
                out.error("$.context.selections", "must not be empty")
            for i, selection in enumerate(selections):
                path = child("$.context.selections", i)
                if not isinstance(selection, str) or not REFERENCE.match(selection):
                    out.error(path, "not a 'Type/id' reference")
                elif draft is not None and selection not in draft_ids:
                    out.error(path, f"{selection!r} is not an entry of context.draftOrders")
    return draft_ids


def _bundle(bundle: dict[str, Any], path: str, expected: str | None, out: _Collector) -> set[str]:
    """Check a Bundle and its entries; return the 'Type/id' of every entry resource."""
    shell = {k: v for k, v in bundle.items() if k != "entry"}
    _resource(shell, path, None, out)
    entries = bundle.get("entry")
    ids: set[str] = set()
    if entries is None:
        return ids
    if not isinstance(entries, list):
        out.error(child(path, "entry"), f"must be an array, not {_type_name(entries)}")
        return ids
    for i, entry in enumerate(entries):
        entry_path = child(child(path, "entry"), i)
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            out.error(entry_path, "entry without a resource")
            continue
        resource = entry["resource"]
        outcome = isinstance(entry.get("search"), dict) and entry["search"].get("mode") == "outcome"
        _resource(resource, child(entry_path, "resource"), None if outcome else expected, out)
        if isinstance(resource.get("resourceType"), str) and isinstance(resource.get("id"), str):
            ids.add(f"{resource['resourceType']}/{resource['id']}")
    return ids


def _resource(resource: dict[str, Any], path: str, expected: str | None, out: _Collector) -> None:
    """R4B validity (with the service's lenient defaults as warnings) and code systems."""
    problem = validation_problem(resource)
    if problem is not None:
        out.error(path, f"not a valid FHIR R4 resource: {problem}")
        return
    resource_type = str(resource["resourceType"])
    if expected is not None and resource_type not in (expected, "OperationOutcome"):
        out.warning(path, f"a {resource_type} where a {expected} is expected: the checks will "
                          "not read it")
    for name, default in LENIENT_DEFAULTS.get(resource_type, {}).items():
        if name not in resource:
            out.warning(child(path, name), f"missing (required by FHIR R4); read as {default!r}")
    rid = resource.get("id")
    if isinstance(rid, str) and len(rid) > FHIR_ID_MAX:
        out.warning(child(path, "id"), f"{len(rid)} characters, longer than FHIR R4's "
                                       f"{FHIR_ID_MAX} (accepted)")
    for element in CODED_ELEMENTS.get(resource_type, ()):
        concept = resource.get(element)
        if isinstance(concept, dict):
            _codings(concept, child(path, element), out)


def _codings(concept: dict[str, Any], path: str, out: _Collector) -> None:
    known = known_systems()
    codings = concept.get("coding")
    if not isinstance(codings, list) or not codings:
        return  # text only: the checks fall back to name matching where they can
    for i, coding in enumerate(codings):
        if not isinstance(coding, dict):
            continue
        system = coding.get("system")
        if system is None:
            out.warning(child(child(path, "coding"), i), "coding without a system: the checks "
                                                        "match codes on (system, code) only")
        elif system not in known:
            out.warning(child(child(child(path, "coding"), i), "system"),
                        f"{system!r} is not a code system the checks read (they read CVX, LOINC, "
                        "RxNorm, SNOMED CT and ICD-10-CM)")


def _prefetch(prefetch: dict[str, Any], server: Any, out: _Collector) -> None:
    for key, value in prefetch.items():
        path = child("$.prefetch", key)
        expected = PREFETCH_TYPES.get(key)
        if expected is None:
            out.warning(path, "not a prefetch key of this service: ignored")
        if value is None:
            continue
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            out.error(path, "not a Bundle, a resource, null or an OperationOutcome")
            continue
        if value["resourceType"] == "OperationOutcome":
            _resource(value, path, None, out)
            if not server:
                out.warning(path, "an OperationOutcome and no fhirServer: the service cannot "
                                  "fetch this key and will answer 412 for an alemtuzumab order")
            continue
        if value["resourceType"] == "Bundle":
            _bundle(value, path, expected, out)
        else:
            _resource(value, path, expected, out)
    if not server:
        for key in PREFETCH_TYPES:
            if key not in prefetch:
                out.warning(child("$.prefetch", key), "missing and no fhirServer: the service "
                                                      "will answer 412 for an alemtuzumab order")


def counts(problems: list[Problem]) -> tuple[int, int]:
    """(errors, warnings)."""
    errors = sum(1 for p in problems if p.level == "error")
    return errors, len(problems) - errors
