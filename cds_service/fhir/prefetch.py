"""Prefetch semantics (CDS Hooks 2.0): present -> use, null -> no data, absent or
OperationOutcome -> fetch from fhirServer; if that is impossible -> 412 naming the keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest, PreconditionFailed
from ..hook_request import HookRequest

Fetcher = Callable[[HookRequest, dict[str, str]], dict[str, Any]]
"""Fetches {key: rendered query} from the FHIR server; returns {key: resource or Bundle}.
Raises PreconditionFailed for keys it cannot obtain."""


@dataclass
class ResolvedData:
    """Everything the record is built from, and where each prefetch key came from."""

    values: list[Any] = field(default_factory=list)
    no_data: set[str] = field(default_factory=set)
    origin: dict[str, str] = field(default_factory=dict)


def _is_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """Replace {{context.x}} tokens with the hook context's values; an unknown token is a 400."""
    out, rest = [], template
    while "{{" in rest:
        before, _, after = rest.partition("{{")
        token, sep, rest = after.partition("}}")
        if not sep:
            raise BadRequest(f"Unterminated prefetch token in template {template!r}.")
        name = token.strip()
        value = context.get(name[len("context."):]) if name.startswith("context.") else None
        if not isinstance(value, str) or not value:
            raise BadRequest(f"Prefetch token '{{{{{name}}}}}' cannot be filled from the hook context.",
                             [f"context.{name.removeprefix('context.')}"])
        out.extend((before, value))
    out.append(rest)
    return "".join(out)


def resolve_prefetch(
    request: HookRequest,
    templates: Mapping[str, str],
    types: Mapping[str, str],
    fetcher: Fetcher | None = None,
) -> ResolvedData:
    """Collect the data for every declared key; fetch what is missing or raise 412."""
    prefetch = request.prefetch or {}
    resolved = ResolvedData()
    missing: dict[str, str] = {}
    for key, template in templates.items():
        if key not in prefetch:
            missing[key] = template
            continue
        value = prefetch[key]
        if value is None:
            resolved.no_data.add(types[key])
            resolved.origin[key] = "prefetch (null: no data)"
        elif _is_outcome(value):
            missing[key] = template
        elif isinstance(value, dict):
            resolved.values.append(value)
            resolved.origin[key] = "prefetch"
        else:
            raise BadRequest(f"Prefetch value '{key}' must be a FHIR resource, Bundle or null.",
                             [f"prefetch.{key}"])
    for key, value in prefetch.items():  # undeclared keys: still evidence if they are resources
        if key not in templates and isinstance(value, dict) and not _is_outcome(value):
            resolved.values.append(value)
            resolved.origin[key] = "prefetch (undeclared key)"
    if missing:
        if fetcher is None or not request.fhir_server:
            raise PreconditionFailed(
                "Required data was not prefetched and no FHIR server was given to fetch it: "
                + ", ".join(sorted(missing)) + ".",
                [f"prefetch.{k}" for k in sorted(missing)],
            )
        queries = {k: render_template(t, request.context) for k, t in missing.items()}
        for key, value in fetcher(request, queries).items():
            resolved.values.append(value)
            resolved.origin[key] = "fhirServer"
    return resolved
