"""Which draft order is alemtuzumab (Lemtrada for MS), and when it is planned to start (T0).

This runs first on every call and reads only the draft orders (and, for a medicationReference,
the Medication it points to), so an order for any other drug is answered before anything else
in the request is looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum
from functools import cached_property
from typing import Any

from .fhirdata import Code, Malformed, codings, concept_words, parse_date
from .record import dosage_starts, find_medication, iter_resources
from .terminology import value_set


class Product(Enum):
    LEMTRADA = "lemtrada"
    CAMPATH = "campath"
    OTHER = "other"


def classify(codes: Iterable[Code], words: str) -> Product:
    """Lemtrada (or alemtuzumab unspecified) vs Campath vs anything else; Campath wins ties."""
    codes = list(codes)
    campath, lemtrada = value_set("campath-rxnorm"), value_set("alemtuzumab-lemtrada-rxnorm")
    if campath.matches_any(codes) or campath.name_in(words):
        return Product.CAMPATH
    if lemtrada.matches_any(codes) or lemtrada.name_in(words):
        return Product.LEMTRADA
    return Product.OTHER


@dataclass(frozen=True)
class AlemtuzumabOrder:
    """The draft MedicationRequest for alemtuzumab and how its medication was recognised."""

    request: dict[str, Any]
    matched_by: str
    codes: tuple[Code, ...]

    @property
    def reference(self) -> str:
        return f"MedicationRequest/{self.request.get('id', '')}"


@dataclass(frozen=True)
class OrderContext:
    """The order under review and the moment every rule counts back from."""

    hook: str
    order: AlemtuzumabOrder
    t0: date
    t0_source: str
    draft_orders: tuple[dict[str, Any], ...]


def draft_resources(draft_orders: Any) -> list[dict[str, Any]]:
    """Resources in context.draftOrders (a Bundle, with or without `type`)."""
    return list(iter_resources(draft_orders))


@dataclass
class MedicationSources:
    """Where a medicationReference may point, each pool listed once per hook call (not once per
    draft order): the Medications in draftOrders, in prefetch, and read from the FHIR server."""

    drafts: list[dict[str, Any]]
    prefetch: dict[str, Any] | None
    read: Sequence[dict[str, Any]] = ()

    @cached_property
    def in_drafts(self) -> list[dict[str, Any]]:
        return [r for r in self.drafts if r.get("resourceType") == "Medication"]

    @cached_property
    def in_prefetch(self) -> list[dict[str, Any]]:
        return [r for value in (self.prefetch or {}).values() for r in iter_resources(value)
                if r.get("resourceType") == "Medication"]


def _medication_of(request: dict[str, Any],
                   sources: MedicationSources) -> tuple[tuple[Code, ...], str, str]:
    """(codes, words, how) of a request's medication: inline, or the referenced Medication
    (contained for '#id'; else draftOrders, then prefetch, then read from the FHIR server)."""
    concept = request.get("medicationCodeableConcept")
    if concept is not None:
        return tuple(codings(concept)), concept_words(concept), "medicationCodeableConcept"
    ref = request.get("medicationReference")
    if not isinstance(ref, dict):
        return (), "", "no medication"
    display = ref.get("display") if isinstance(ref.get("display"), str) else ""
    reference = ref.get("reference")
    if str(reference).startswith("#"):
        medication = find_medication(reference, request)
        where = "the order's contained resources"
    else:
        medication = find_medication(reference, request, sources.in_drafts)
        where = "draftOrders"
        if medication is None and sources.prefetch:
            medication = find_medication(reference, request, sources.in_prefetch)
            where = "prefetch"
    if medication is None and sources.read:
        medication = find_medication(reference, request, sources.read)
        where = "the FHIR server"
    if medication is None:
        return (), str(display), "medicationReference display"
    concept = medication.get("code")
    words = " | ".join(w for w in (str(display), concept_words(concept)) if w)
    return tuple(codings(concept)), words, f"medicationReference to Medication in {where}"


class UnreadableOrder(ValueError):
    """An order under review whose medication cannot be read: it might be alemtuzumab."""

    def __init__(self, order: str, detail: str) -> None:
        super().__init__(f"{order}: {detail}")
        self.order, self.detail = order, detail


@dataclass(frozen=True)
class OrderScan:
    """The alemtuzumab order under review, if any, and the Medication references of orders under
    review that name no medication anyone could recognise (nothing resolved, no display)."""

    order: AlemtuzumabOrder | None
    unidentified: tuple[str, ...] = ()


def scan_orders(
    hook: str,
    draft_orders: Any,
    selections: list[str] | None,
    prefetch: dict[str, Any] | None,
    read: Sequence[dict[str, Any]] = (),
) -> OrderScan:
    """Find the first Lemtrada order under review (order-select: selections only).

    An order whose medication cannot be identified at all (a medicationReference resolved nowhere,
    without display) is reported, not skipped: it could be the alemtuzumab order. A referenced
    Medication whose code cannot be read raises UnreadableOrder."""
    drafts = draft_resources(draft_orders)
    sources = MedicationSources(drafts, prefetch, read)
    wanted = set(selections) if hook == "order-select" and selections is not None else None
    unidentified: list[str] = []
    for resource in drafts:
        if resource.get("resourceType") != "MedicationRequest":
            continue
        reference = f"MedicationRequest/{resource.get('id')}"
        if wanted is not None and reference not in wanted:
            continue
        try:
            codes, words, how = _medication_of(resource, sources)
        except Malformed as exc:
            raise UnreadableOrder(reference, f"its Medication cannot be read ({exc})") from None
        if not codes and not words.strip():
            target = (resource.get("medicationReference") or {}).get("reference")
            if isinstance(target, str) and target and not target.startswith("#"):
                unidentified.append(target)
            continue
        if classify(codes, words) is Product.LEMTRADA:
            lemtrada = value_set("alemtuzumab-lemtrada-rxnorm")
            code = lemtrada.matches_any(list(codes))
            matched = f"RxNorm {code[1]} via {how}" if code else f"name in text via {how}"
            return OrderScan(AlemtuzumabOrder(resource, matched, codes))
    return OrderScan(None, tuple(unidentified))


def planned_start(request: dict[str, Any], today: date) -> tuple[date, str]:
    """T0: earliest dosage bounds start or timing event; else authoredOn; else today."""
    starts = dosage_starts(request)
    if starts:
        return min(span.earliest for span in starts), "dosage timing start"
    authored = parse_date(request.get("authoredOn"))
    if authored is not None:
        return authored.earliest, "authoredOn"
    return today, "today (the order has no start date)"
