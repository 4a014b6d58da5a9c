"""Prefetch semantics (CDS Hooks 2.0): present -> use (a paginated searchset is completed from the
FHIR server), null -> no data, absent or OperationOutcome -> fetch from fhirServer; if that is
impossible -> 412 naming the keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BadRequest, PreconditionFailed
from ..hook_request import HookRequest


@dataclass(frozen=True)
class Fetched:
    """A value obtained by a fetcher, with where it came from (for ResolvedData.origin)."""

    value: dict[str, Any]
    origin: str = "fhirServer"


class Fetcher(Protocol):
    """Obtains every key of `queries` ({key: rendered query relative to fhirServer}).

    `pages` holds, for some of those keys, the prefetched first page of a searchset whose `next`
    links must be followed (or, when they cannot be, the whole query fetched). Returns
    {key: resource, Bundle or Fetched}; raises PreconditionFailed for keys it cannot obtain.
    """

    def __call__(self, request: HookRequest, queries: Mapping[str, str],
                 pages: Mapping[str, dict[str, Any]] | None = None) -> Mapping[str, Any]: ...


@dataclass
class ResolvedData:
    """Everything the record is built from, and where each prefetch key came from."""

    values: list[Any] = field(default_factory=list)
    no_data: set[str] = field(default_factory=set)
    origin: dict[str, str] = field(default_factory=dict)


def _is_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def _bundle_problem(value: dict[str, Any]) -> str | None:
    """Why a Bundle's entries cannot be read (never skipped silently: that would hide evidence)."""
    if value.get("resourceType") != "Bundle" or "entry" not in value:
        return None
    entries = value["entry"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return "a Bundle's 'entry' must be an array of objects"
    for entry in entries:
        resource = entry.get("resource")
        if resource is not None and not (
                isinstance(resource, dict) and isinstance(resource.get("resourceType"), str)):
            return ("every entry's 'resource' must be a FHIR resource (an object with a "
                    "resourceType)")
    return None


def next_link(value: Any) -> str | None:
    """The `next` link of a Bundle (a paginated search result), or None."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return None
    links = value.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """Replace {{context.x}} tokens with the hook context's values; an unknown token is a 400."""
    out: list[str] = []
    rest = template
    while "{{" in rest:
        before, _, after = rest.partition("{{")
        token, sep, rest = after.partition("}}")
        if not sep:
            raise BadRequest(f"Unterminated prefetch token in template {template!r}.")
        name = token.strip()
        value = context.get(name[len("context."):]) if name.startswith("context.") else None
        if not isinstance(value, str) or not value:
            raise BadRequest(f"Prefetch token '{{{{{name}}}}}' cannot be filled from the hook "
                             "context.",
                             [f"context.{name.removeprefix('context.')}"])
        out.extend((before, value))
    out.append(rest)
    return "".join(out)


def _keys_expression(keys: list[str]) -> list[str]:
    return [f"prefetch.{k}" for k in sorted(keys)]


def resolve_prefetch(
    request: HookRequest,
    templates: Mapping[str, str],
    types: Mapping[str, str],
    fetcher: Fetcher | None = None,
) -> ResolvedData:
    """Collect the data for every declared key; fetch what is missing or incomplete, or raise
    412."""
    prefetch = request.prefetch or {}
    resolved = ResolvedData()
    missing: dict[str, str] = {}
    paged: dict[str, dict[str, Any]] = {}
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
        elif isinstance(value, dict) and _bundle_problem(value):
            raise BadRequest(f"Prefetch value '{key}': {_bundle_problem(value)}.",
                             [f"prefetch.{key}.entry"])
        elif isinstance(value, dict) and next_link(value) is not None:
            paged[key] = value  # only the first page: the rest must come from the server
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
    needed = sorted({*missing, *paged})
    if not needed:
        return resolved
    if fetcher is None or not request.fhir_server:
        parts = []
        if missing:
            parts.append("not prefetched: " + ", ".join(sorted(missing)))
        if paged:
            parts.append("prefetched only in part (paginated): " + ", ".join(sorted(paged)))
        raise PreconditionFailed(
            "Required data is " + "; ".join(parts)
            + "; and no FHIR server was given to fetch it.", _keys_expression(needed))
    queries = {k: render_template(templates[k], request.context) for k in needed}
    results = fetcher(request, queries, paged) if paged else fetcher(request, queries)
    lost = [k for k in needed if not isinstance(results.get(k), (dict, Fetched))]
    if lost:  # a fetcher must raise for what it cannot get; never treat silence as no data
        raise PreconditionFailed("Required data could not be obtained from the FHIR server: "
                                 + ", ".join(lost) + ".", _keys_expression(lost))
    for key in needed:
        result = results[key]
        if isinstance(result, Fetched):
            resolved.values.append(result.value)
            resolved.origin[key] = result.origin
        else:
            resolved.values.append(result)
            resolved.origin[key] = "fhirServer"
    return resolved
