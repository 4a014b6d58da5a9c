"""Prefetch semantics (CDS Hooks 2.0): present -> use (a paginated searchset is completed from the
FHIR server), null -> no data, absent or OperationOutcome -> fetch from fhirServer; if that is
impossible -> 412 naming the keys.

`resolve` is the one step that reaches the FHIR server in a hook call: the keys the prefetch
lacks and the Medications of orders nobody could identify are read in one trip. This layer knows
the endpoint (base URL and token), never the hook request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BadRequest, PreconditionFailed, ServiceError
from ..origin import Origin


@dataclass(frozen=True)
class Endpoint:
    """Where missing data is read from: the request's fhirServer and its bearer token."""

    base_url: str = ""
    """The fhirServer as the request gave it ("" when it gave none)."""
    token: str | None = None

    @classmethod
    def of(cls, fhir_server: str | None, fhir_authorization: Mapping[str, Any] | None) -> Endpoint:
        """The endpoint a hook request names (its fhirServer and fhirAuthorization.access_token)."""
        token = (fhir_authorization or {}).get("access_token")
        return cls(fhir_server or "", token if isinstance(token, str) and token else None)


@dataclass(frozen=True)
class Fetched:
    """A value obtained by a fetcher, with where it came from (for ResolvedData.origin)."""

    value: dict[str, Any]
    origin: Origin = Origin.FHIR_SERVER


@dataclass
class FetchOutcome:
    """What one trip to the FHIR server brought back, key by key; failures are safe to show
    (no URL, no token)."""

    results: dict[str, Fetched] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    """Keys neither obtained nor failed: past the deadline, or abandoned after a failure."""
    refused: str | None = None
    """Why the fhirServer was not called at all (then every key is missing)."""
    deadline_seconds: float = 0.0

    def problem(self, keys: list[str]) -> PreconditionFailed | None:
        """The 412 for those of `keys` that were not obtained, or None when all were."""
        keys = sorted(keys)
        if self.refused is not None:
            return PreconditionFailed(
                f"The fhirServer {self.refused}, so it was not called; required data could not be "
                f"obtained: {', '.join(keys)}.",
                _keys_expression(keys),
            )
        failures = {k: self.failures[k] for k in keys if k in self.failures}
        unfinished = [k for k in keys if k in self.unfinished]
        lost = [
            k for k in keys if k not in self.results and k not in failures and k not in unfinished
        ]
        if lost:  # a fetcher must report what it cannot get; never treat silence as no data
            return PreconditionFailed(
                "Required data could not be obtained from the FHIR server: "
                + ", ".join(lost)
                + ".",
                _keys_expression(lost),
            )
        if not failures and not unfinished:
            return None
        if not failures:
            why = (
                f"not obtained within the deadline of {self.deadline_seconds:g} s"
                if not self.failures
                else "abandoned after another read failed"
            )
            failures = dict.fromkeys(unfinished, why)
            unfinished = []
        detail = "; ".join(f"{k}: {failures[k]}" for k in sorted(failures))
        if unfinished:
            detail += "; abandoned after that failure: " + ", ".join(unfinished)
        return PreconditionFailed(
            f"Required data could not be obtained from the FHIR server ({detail}).",
            _keys_expression([*failures, *unfinished]),
        )


class Fetcher(Protocol):
    """Obtains every key of `queries` ({key: rendered query relative to the endpoint}) in one
    trip.

    `pages` holds, for some of those keys, the prefetched first page of a searchset whose `next`
    links must be followed (or, when they cannot be, the whole query fetched). Never raises for a
    key it cannot obtain: the outcome says which and why.
    """

    def __call__(
        self,
        endpoint: Endpoint,
        queries: Mapping[str, str],
        pages: Mapping[str, dict[str, Any]] | None = None,
    ) -> FetchOutcome: ...


@dataclass
class ResolvedData:
    """Everything the record is built from, where each prefetch key came from, and the
    Medications read for orders that named none anyone could recognise."""

    values: list[Any] = field(default_factory=list)
    no_data: set[str] = field(default_factory=set)
    origin: dict[str, Origin] = field(default_factory=dict)
    medications: list[dict[str, Any]] = field(default_factory=list)
    problem: ServiceError | None = None
    """Why the prefetch data is incomplete (400 or 412). Kept, not raised, so an order that turns
    out not to be alemtuzumab is still answered with no cards; raise it before evaluating."""


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
            isinstance(resource, dict) and isinstance(resource.get("resourceType"), str)
        ):
            return (
                "every entry's 'resource' must be a FHIR resource (an object with a resourceType)"
            )
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
        value = context.get(name[len("context.") :]) if name.startswith("context.") else None
        if not isinstance(value, str) or not value:
            raise BadRequest(
                f"Prefetch token '{{{{{name}}}}}' cannot be filled from the hook context.",
                [f"context.{name.removeprefix('context.')}"],
            )
        out.extend((before, value))
    out.append(rest)
    return "".join(out)


def _keys_expression(keys: list[str]) -> list[str]:
    return [f"prefetch.{k}" for k in sorted(keys)]


MEDICATION_KEY = "medication-"
"""Prefix of the fetch keys of Medications read for unidentified orders (never prefetch keys)."""


@dataclass
class _Plan:
    """What the prefetch already gives, and which keys must be read (all or the rest of pages)."""

    resolved: ResolvedData
    missing: dict[str, str]
    paged: dict[str, dict[str, Any]]


def _plan(
    prefetch: Mapping[str, Any], templates: Mapping[str, str], types: Mapping[str, str]
) -> _Plan:
    """Sort every declared key into used, no data, missing or paged; a bad value is a 400."""
    plan = _Plan(ResolvedData(), {}, {})
    resolved = plan.resolved
    for key, template in templates.items():
        if key not in prefetch:
            plan.missing[key] = template
            continue
        value = prefetch[key]
        if value is None:
            resolved.no_data.add(types[key])
            resolved.origin[key] = Origin.PREFETCH_NULL
        elif _is_outcome(value):
            plan.missing[key] = template
        elif isinstance(value, dict) and _bundle_problem(value):
            raise BadRequest(
                f"Prefetch value '{key}': {_bundle_problem(value)}.", [f"prefetch.{key}.entry"]
            )
        elif isinstance(value, dict) and next_link(value) is not None:
            plan.paged[key] = value  # only the first page: the rest must come from the server
        elif isinstance(value, dict):
            resolved.values.append(value)
            resolved.origin[key] = Origin.PREFETCH
        else:
            raise BadRequest(
                f"Prefetch value '{key}' must be a FHIR resource, Bundle or null.",
                [f"prefetch.{key}"],
            )
    for key, value in prefetch.items():  # undeclared keys: still evidence if they are resources
        if key not in templates and isinstance(value, dict) and not _is_outcome(value):
            resolved.values.append(value)
            resolved.origin[key] = Origin.PREFETCH_UNDECLARED
    return plan


def _queries(
    plan: _Plan,
    context: Mapping[str, Any],
    templates: Mapping[str, str],
    endpoint: Endpoint,
    fetcher: Fetcher | None,
) -> dict[str, str]:
    """The rendered queries of the keys to read; 412 when there is no FHIR server to read from,
    400 for a template the context cannot fill."""
    needed = sorted({*plan.missing, *plan.paged})
    if needed and (fetcher is None or not endpoint.base_url):
        parts = []
        if plan.missing:
            parts.append("not prefetched: " + ", ".join(sorted(plan.missing)))
        if plan.paged:
            parts.append("prefetched only in part (paginated): " + ", ".join(sorted(plan.paged)))
        raise PreconditionFailed(
            "Required data is " + "; ".join(parts) + "; and no FHIR server was given to fetch it.",
            _keys_expression(needed),
        )
    return {k: render_template(templates[k], context) for k in needed}


def resolve(
    prefetch: Mapping[str, Any] | None,
    context: Mapping[str, Any],
    endpoint: Endpoint,
    templates: Mapping[str, str],
    types: Mapping[str, str],
    fetcher: Fetcher | None = None,
    medications: Mapping[str, str] | None = None,
) -> ResolvedData:
    """Collect the data for every declared key and read, in one trip to the FHIR server, what
    is missing or incomplete together with the `medications` ({key: 'Medication/id'}).

    A Medication that cannot be read raises its 412 at once (the order stays unidentified).
    A prefetch problem is kept in `ResolvedData.problem` when Medications were asked for (the
    order may not need the data), and raised otherwise."""
    medications = medications or {}
    try:
        plan = _plan(prefetch or {}, templates, types)
        queries = _queries(plan, context, templates, endpoint, fetcher)
        problem: ServiceError | None = None
    except (BadRequest, PreconditionFailed) as exc:
        if not medications:
            raise
        plan, queries, problem = _Plan(ResolvedData(), {}, {}), {}, exc
    resolved = plan.resolved
    resolved.problem = problem
    if not queries and not medications:
        return resolved
    assert fetcher is not None  # _queries raised without one; medications are asked with one
    paged = {k: v for k, v in plan.paged.items() if k in queries}
    outcome = (
        fetcher(endpoint, {**queries, **medications}, paged)
        if paged
        else fetcher(endpoint, {**queries, **medications})
    )
    if medications:
        failed = outcome.problem(list(medications))
        if failed is not None:
            raise failed
        values = [outcome.results[k].value for k in medications]
        resolved.medications = [v for v in values if v.get("resourceType") == "Medication"]
    failed = outcome.problem(list(queries)) if queries else None
    if failed is not None:
        if not medications:
            raise failed
        resolved.problem = failed
        return resolved
    for key in sorted(queries):
        result = outcome.results[key]
        resolved.values.append(result.value)
        resolved.origin[key] = result.origin
    return resolved
