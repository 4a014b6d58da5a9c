"""What is wrong with a hook request an EHR would send: the logic behind `cds-service validate`.

Pure (no I/O, no flask): a parsed JSON document in, a list of Problems out, each with the JSON path
of what it is about, so an implementer can fix an integration before the first real call.

Levels: an `error` is something the CDS Hooks 2.0 specification, the order-select, order-sign and
patient-view hook definitions or FHIR R4 forbid (the service may refuse the call or be unable to
read the evidence). A `warning` is something the service tolerates but that changes what it can
conclude: resources it reads leniently (a MedicationRequest without `intent`, a Bundle without
`type`, ids longer than R4's 64 characters, as Epic sends them), codings in systems the checks do
not read, prefetch keys it will have to fetch or cannot fetch (and will then answer 412: for an
alemtuzumab order, or for any patient at patient-view).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .domain.terminology import known_systems
from .hook_spec import (
    HOOKS,
    fields_for,
    has_type,
    hook_instance_problem,
    is_missing,
    is_uuid,
    json_type,
)
from .models import LENIENT_DEFAULTS, validation_problem
from .services import prefetch_for

Level = Literal["error", "warning"]

# Presence and JSON types come from hook_spec.FIELDS (shared with the service's request reader);
# the value forms below are checked here only.
REFERENCE = re.compile(r"^[\w]+/[\w\-.]+$")
USER_REFERENCE = re.compile(r"^(Practitioner|PractitionerRole)/[\w\-.]+$")
PLAIN_ID = re.compile(r"^[\w\-.]+$")
FHIR_ID_MAX = 64
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
    return json_type(value)


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem("error", path, message))

    def warning(self, path: str, message: str) -> None:
        self.problems.append(Problem("warning", path, message))


def validate_request(doc: Any) -> list[Problem]:
    """Every problem of a CDS Hooks request for order-select, order-sign or patient-view, in
    document order."""
    out = _Collector()
    if not isinstance(doc, dict):
        out.error("$", f"the request must be a JSON object, not {_type_name(doc)}")
        return out.problems
    hook = _envelope(doc, out)
    context = doc.get("context")
    if isinstance(context, dict):
        _context(context, hook, out)
    prefetch = doc.get("prefetch")
    if isinstance(prefetch, dict):
        _prefetch(prefetch, doc.get("fhirServer"), hook, out)
    elif prefetch is None and hook in HOOKS and not doc.get("fhirServer"):
        out.warning("$", f"neither prefetch nor fhirServer: the service will answer {_412(hook)}")
    return out.problems


def _fields(holder: dict[str, Any], hook: str | None, parent: str, out: _Collector) -> None:
    """Presence and JSON type of the rows of hook_spec.FIELDS under `parent`, and of their
    members: every row the service would refuse with a 400 is an error here."""
    for field in fields_for(hook, parent):
        path = f"$.{field.path}"
        if is_missing(holder, field.name):
            if field.required:
                report = out.warning if field.tolerated else out.error
                report(
                    path,
                    ("required" if field.hooks is None else f"required for the {hook} hook")
                    + ("; the service answers without it" if field.tolerated else ""),
                )
            elif field.required_with is not None and not is_missing(holder, field.required_with):
                out.error(path, f"required when {field.required_with} is present")
            continue
        value = holder[field.name]
        if not has_type(value, field.json_type):
            out.error(path, f"must be {_a(field.json_type)}, not {_type_name(value)}")
            continue
        if field.items is not None:
            for i, item in enumerate(value):
                if not has_type(item, field.items):
                    out.error(child(path, i), f"must be {_a(field.items)}, not {_type_name(item)}")
        if isinstance(value, dict):
            _fields(value, hook, field.path, out)


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def _envelope(doc: dict[str, Any], out: _Collector) -> str | None:
    hook = doc.get("hook")
    known = hook if isinstance(hook, str) and hook in HOOKS else None
    _fields(doc, known, "", out)
    if isinstance(hook, str) and known is None:
        out.error("$.hook", f"this service answers {', '.join(HOOKS)}, not {hook!r}")
    instance = doc.get("hookInstance")
    if isinstance(instance, str):
        if (problem := hook_instance_problem(instance)) is not None:
            out.error("$.hookInstance", f"{problem}: the service answers 400")
        elif not is_uuid(instance):
            out.warning(
                "$.hookInstance",
                f"not a UUID: {instance!r} (CDS Hooks requires one; "
                "the service accepts it and counts it in "
                "cds_hook_instance_not_uuid_total)",
            )
    server = doc.get("fhirServer")
    if isinstance(server, str):
        if not re.match(r"^https?://[^/\s]+", server):
            out.error("$.fhirServer", "must be an absolute URL (https)")
        elif server.startswith("http://"):
            out.warning(
                "$.fhirServer",
                "plain http: the service only calls http servers that are "
                "explicitly allowed (CDS Hooks requires TLS)",
            )
    auth = doc.get("fhirAuthorization")
    if (
        isinstance(auth, dict)
        and isinstance(auth.get("token_type"), str)
        and auth["token_type"] != "Bearer"
    ):
        out.error("$.fhirAuthorization.token_type", f"must be 'Bearer', not {auth['token_type']!r}")
    return hook if isinstance(hook, str) else None


def _context(context: dict[str, Any], hook: str | None, out: _Collector) -> set[str]:
    """The forms of the context values of a hook this service answers (their presence and types
    are checked by _fields)."""
    if hook not in HOOKS:
        return set()
    user = context.get("userId")
    if isinstance(user, str) and not USER_REFERENCE.match(user):
        out.error(
            "$.context.userId", f"must be 'Practitioner/id' or 'PractitionerRole/id', not {user!r}"
        )
    patient = context.get("patientId")
    if isinstance(patient, str) and not PLAIN_ID.match(patient):
        out.error("$.context.patientId", f"must be a Patient id (not a reference), not {patient!r}")
    encounter = context.get("encounterId")
    if isinstance(encounter, str) and not PLAIN_ID.match(encounter):
        out.error("$.context.encounterId", f"must be an Encounter id, not {encounter!r}")
    draft_ids: set[str] = set()
    draft = context.get("draftOrders")
    if isinstance(draft, dict):
        if draft.get("resourceType") == "Bundle":
            draft_ids = _bundle(draft, "$.context.draftOrders", None, out)
        else:
            out.error("$.context.draftOrders", "must be a FHIR Bundle")
            draft = None
    selections = context.get("selections")
    if hook == "order-select" and isinstance(selections, list):
        if not selections:
            out.error("$.context.selections", "must not be empty")
        for i, selection in enumerate(selections):
            path = child("$.context.selections", i)
            if not isinstance(selection, str):
                continue  # reported by _fields
            if not REFERENCE.match(selection):
                out.error(path, "not a 'Type/id' reference")
            elif isinstance(draft, dict) and selection not in draft_ids:
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
        out.warning(
            path, f"a {resource_type} where a {expected} is expected: the checks will not read it"
        )
    for name, default in LENIENT_DEFAULTS.get(resource_type, {}).items():
        if name not in resource:
            out.warning(child(path, name), f"missing (required by FHIR R4); read as {default!r}")
    rid = resource.get("id")
    if isinstance(rid, str) and len(rid) > FHIR_ID_MAX:
        out.warning(
            child(path, "id"),
            f"{len(rid)} characters, longer than FHIR R4's {FHIR_ID_MAX} (accepted)",
        )
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
            out.warning(
                child(child(path, "coding"), i),
                "coding without a system: the checks match codes on (system, code) only",
            )
        elif system not in known:
            out.warning(
                child(child(child(path, "coding"), i), "system"),
                f"{system!r} is not a code system the checks read (they read CVX, LOINC, "
                "RxNorm, SNOMED CT and ICD-10-CM)",
            )


def _412(hook: str | None) -> str:
    """When the service answers 412 for missing data: the order services for an alemtuzumab
    order, the monitoring service for a patient whose data it cannot read."""
    return "412 for any patient" if hook == "patient-view" else "412 for an alemtuzumab order"


def _prefetch(prefetch: dict[str, Any], server: Any, hook: str | None, out: _Collector) -> None:
    types = prefetch_for(hook or "")[1]
    for key, value in prefetch.items():
        path = child("$.prefetch", key)
        expected = types.get(key)
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
                out.warning(
                    path,
                    "an OperationOutcome and no fhirServer: the service cannot "
                    f"fetch this key and will answer {_412(hook)}",
                )
            continue
        if value["resourceType"] == "Bundle":
            _bundle(value, path, expected, out)
        else:
            _resource(value, path, expected, out)
    if not server:
        for key in types:
            if key not in prefetch:
                out.warning(
                    child("$.prefetch", key),
                    f"missing and no fhirServer: the service will answer {_412(hook)}",
                )


def counts(problems: list[Problem]) -> tuple[int, int]:
    """(errors, warnings)."""
    errors = sum(1 for p in problems if p.level == "error")
    return errors, len(problems) - errors
