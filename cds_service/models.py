"""The only module that imports fhir.resources: validation of R4 resources with the R4B models.

Validation is strict about what FHIR R4 defines, but forgives what real EHRs send and the rules
do not depend on (see LENIENT_DEFAULTS), because refusing an Epic order over a missing `intent`
would help nobody.
"""

from __future__ import annotations

import hashlib
import threading
import typing
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir_core.types import FhirBase
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


def load_models(resource_types: Iterable[str]) -> int:
    """Import the R4B models of these resource types and of every element they can contain.

    fhir.resources imports a nested element's model (Quantity, Dosage, ...) only when a resource
    first carries one; that import, and pydantic building its validator, is most of a fresh
    process's first hook call. Returns how many models are loaded."""
    loaded: set[type] = set()
    pending = [_model(name) for name in resource_types]
    while pending:
        model = pending.pop()
        if model in loaded:
            continue
        loaded.add(model)
        for info in model.model_fields.values():
            pending.extend(element.get_model_klass() for element in _element_types(info.annotation))
    return len(loaded)


def _element_types(annotation: Any) -> Iterator[Any]:
    """The fhir_core element types (which name their model by import path) in an annotation."""
    if (
        isinstance(annotation, type)
        and issubclass(annotation, FhirBase)
        and hasattr(annotation, "_model_klass")
    ):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _element_types(argument)


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
