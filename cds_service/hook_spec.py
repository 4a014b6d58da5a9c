"""The fields of a CDS Hooks request, per hook, as one table read by both request readers.

`hook_request.read_hook_request` (the service: the first problem is a 400) and
`conformance.validate_request` (`cds-service validate`: every problem) both walk `FIELDS`, so they
cannot disagree on what is required or of which JSON type (tests/test_hook_spec.py asserts it).
Pure data and small predicates: no I/O, no imports from the package.

Sources: CDS Hooks 2.0 "HTTP Request" (hook, hookInstance, fhirServer, fhirAuthorization, context,
prefetch) and the Hook Library's order-select 1.0 / order-sign 1.1 context tables, where `userId`,
`patientId`, `draftOrders` (and `selections` for order-select) are REQUIRED and `encounterId`
OPTIONAL, and patient-view 1.0's, where `userId` and `patientId` are REQUIRED and `encounterId`
OPTIONAL (../shared/reference/cds-hooks-essentials.md, ../shared/cdshooks/spec-examples).

A field that is missing (absent or null) when required, or present with the wrong JSON type, is an
`error` in `validate` and a 400 from the service, except a required field the service never reads
(`userId`; `fhirAuthorization`'s `expires_in`, `scope` and `subject`): missing, it is a `warning`
and the call is answered (`tolerated`). The value forms below the type (a `userId` that
is `Practitioner/id`, a selection that names a draft order, an https `fhirServer`, ...) are checked
by `validate` only: they are spec errors the service can still answer (docs/conformance.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

JsonType = Literal["string", "object", "array", "integer"]

HOOKS: tuple[str, ...] = ("order-select", "order-sign", "patient-view")
"""The hooks this service answers. Another hook is added by naming it here and in the `hooks` of
the context rows it shares, plus rows of its own."""


@dataclass(frozen=True)
class Field:
    """One member of the request: where it sits, its JSON type, the hooks it belongs to, and
    whether it is required there or tolerated (checked for its type when present)."""

    path: str
    """Dotted path from the request root, e.g. `context.userId` (no `$.` prefix)."""
    json_type: JsonType
    required: bool = False
    hooks: frozenset[str] | None = None
    """The hooks whose requests have this member; None: every request, whatever its hook."""
    items: JsonType | None = None
    """For arrays: the JSON type of every item."""
    required_with: str | None = None
    """Required when this other member is present (fhirServer with fhirAuthorization)."""
    tolerated: bool = False
    """Required by the spec but not read by the service: when missing, `validate` warns and the
    service still answers (refusing an EHR's call over it would cost the clinician the cards and
    help no one). A present value of the wrong type is still refused."""

    @property
    def refused_when_missing(self) -> bool:
        return self.required and not self.tolerated

    @property
    def parent(self) -> str:
        """The path of the object holding this member ('' for the request root)."""
        return self.path.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    def applies_to(self, hook: str | None) -> bool:
        return self.hooks is None or hook in self.hooks


_ORDER = frozenset({"order-select", "order-sign"})
"""The order hooks (Hook Library order-select 1.0, order-sign 1.1)."""
_EVERY_HOOK = frozenset(HOOKS)
"""The order hooks and patient-view 1.0 (the monitoring service), whose context is userId,
patientId and an optional encounterId: no draft orders."""

FIELDS: tuple[Field, ...] = (
    # The envelope, read before the hook is known (its rows apply to every hook).
    Field("hook", "string", required=True),
    Field("hookInstance", "string", required=True),
    Field("context", "object", required=True),
    # The hook context, in the order the service checks it: what the evaluation reads first.
    Field("context.patientId", "string", required=True, hooks=_EVERY_HOOK),
    Field("context.draftOrders", "object", required=True, hooks=_ORDER),
    Field(
        "context.selections",
        "array",
        required=True,
        hooks=frozenset({"order-select"}),
        items="string",
    ),
    Field("context.userId", "string", required=True, hooks=_EVERY_HOOK, tolerated=True),
    Field("context.encounterId", "string", hooks=_EVERY_HOOK),
    # Optional members of the envelope.
    Field("prefetch", "object"),
    Field("fhirServer", "string", required_with="fhirAuthorization"),
    Field("fhirAuthorization", "object"),
    Field("fhirAuthorization.access_token", "string", required=True),
    Field("fhirAuthorization.token_type", "string", required=True),
    Field("fhirAuthorization.expires_in", "integer", required=True, tolerated=True),
    Field("fhirAuthorization.scope", "string", required=True, tolerated=True),
    Field("fhirAuthorization.subject", "string", required=True, tolerated=True),
    Field("fhirAuthorization.patient", "string"),
)
"""Every field either reader checks, in the order the service checks them. A member of an object
row is checked only when that object is present and of its type."""

ENVELOPE: tuple[Field, ...] = FIELDS[:3]


def fields_for(hook: str | None, parent: str) -> tuple[Field, ...]:
    """The rows directly under `parent` ('' = request root) that apply to `hook`."""
    return tuple(f for f in FIELDS if f.parent == parent and f.applies_to(hook))


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type ('integer' for whole numbers, not booleans)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def has_type(value: Any, expected: JsonType) -> bool:
    return json_type(value) == expected


def is_missing(holder: dict[str, Any], name: str) -> bool:
    """Absent and null are the same for both readers: the spec forbids null members."""
    return holder.get(name) is None


# hookInstance: CDS Hooks types it as a UUID. Longer or non-printable values are refused (an error
# and a 400) because it is logged with every call and stored with every issued card; other short
# values are accepted with a warning and counted (cds_hook_instance_not_uuid_total).
HOOK_INSTANCE_MAX_CHARS = 128
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def hook_instance_problem(value: str) -> str | None:
    """Why a hookInstance is refused (an error, 400), or None."""
    if len(value) > HOOK_INSTANCE_MAX_CHARS:
        return f"longer than {HOOK_INSTANCE_MAX_CHARS} characters (a UUID has 36)"
    if not _PRINTABLE_ASCII.fullmatch(value):
        return "holds characters outside printable ASCII (a UUID is hexadecimal digits and '-')"
    return None


def is_uuid(value: str) -> bool:
    """The form CDS Hooks gives hookInstance; other short values are a warning, not a refusal."""
    return bool(_UUID.fullmatch(value))
