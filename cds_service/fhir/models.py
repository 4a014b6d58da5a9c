"""The only module that imports fhir.resources: validation of R4 resources with the R4B models.

Validation is strict about what FHIR R4 defines, but forgives what real EHRs send and the rules
do not depend on (see LENIENT_DEFAULTS), because refusing an Epic order over a missing `intent`
would help nobody.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

CACHE_SIZE = 65_536
"""Validation outcomes remembered per process, keyed by a digest of the resource's JSON.

Validation is a pure function of content, and an EHR sends the same resources again and again
(order-select, then order-sign, then another order for the same patient), so a repeat costs a
serialisation and a hash instead of a full model validation. Bounded: least recently used first out.
"""
_cache: OrderedDict[bytes, str | None] = OrderedDict()
_cache_lock = threading.Lock()

LENIENT_DEFAULTS: dict[str, dict[str, str]] = {
    # The CDS Hooks Sandbox (and others) send draft MedicationRequests without `intent`.
    "MedicationRequest": {"intent": "order"},
    # draftOrders / prefetch Bundles arrive without `type`.
    "Bundle": {"type": "collection"},
}


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def is_known_type(resource_type: object) -> bool:
    """True when R4B defines a resource of this name."""
    if not isinstance(resource_type, str):
        return False
    try:
        _model(resource_type)
    except (ValueError, KeyError, AttributeError):
        return False
    return True


def clear_validation_cache() -> None:
    """Forget remembered outcomes (benchmarks measure the cold path with it)."""
    with _cache_lock:
        _cache.clear()


def validation_problem(resource: Any) -> str | None:
    """Why this resource is not valid FHIR R4 (one short sentence), or None when it is."""
    if not isinstance(resource, dict):
        return "not a JSON object"
    try:
        key = hashlib.blake2b(orjson.dumps(resource), digest_size=16).digest()
    except (TypeError, orjson.JSONEncodeError):  # not serialisable: validate directly, uncached
        return _validate(resource)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    problem = _validate(resource)
    with _cache_lock:
        _cache[key] = problem
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return problem


def _validate(resource: dict[str, Any]) -> str | None:
    if not isinstance(resource, dict):
        return "not a JSON object"
    resource_type = resource.get("resourceType")
    if not is_known_type(resource_type):
        return f"unknown resourceType {resource_type!r}"
    defaults = LENIENT_DEFAULTS.get(str(resource_type))
    if defaults and any(k not in resource for k in defaults):
        resource = {**defaults, **resource}
    try:
        _model(str(resource_type)).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "resource"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first.get('msg', 'invalid')}{more}"
    except (TypeError, ValueError) as exc:  # model construction errors outside pydantic's
        return f"invalid: {exc}"
    return None
