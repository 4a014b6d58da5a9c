"""Which draft order is alemtuzumab (Lemtrada for MS), and when it is planned to start (T0).

This runs first on every call and reads only the draft orders (and, for a medicationReference,
the Medication it points to), so an order for any other drug is answered before anything else
in the request is looked at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import Enum
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


def _medication_of(
    request: dict[str, Any], drafts: list[dict[str, Any]], prefetch: dict[str, Any] | None
) -> tuple[tuple[Code, ...], str, str]:
    """(codes, words, how) of a request's medication: inline, or the referenced Medication."""
    concept = request.get("medicationCodeableConcept")
    if concept is not None:
        return tuple(codings(concept)), concept_words(concept), "medicationCodeableConcept"
    ref = request.get("medicationReference")
    if not isinstance(ref, dict):
        return (), "", "no medication"
    display = ref.get("display") if isinstance(ref.get("display"), str) else ""
    reference = ref.get("reference")
    medication = find_medication(reference, request, drafts)
    where = "draftOrders"
    if medication is None and prefetch and not str(reference).startswith("#"):
        pool = [r for value in prefetch.values() for r in iter_resources(value)]
        medication = find_medication(reference, request, pool)
        where = "prefetch"
    if medication is None:
        medication = find_medication(reference, request) if str(reference).startswith("#") else None
        where = "contained"
    if medication is None:
        return (), str(display), "medicationReference display"
    concept = medication.get("code")
    words = " | ".join(w for w in (str(display), concept_words(concept)) if w)
    return tuple(codings(concept)), words, f"medicationReference to Medication in {where}"


def find_alemtuzumab_order(
    hook: str,
    draft_orders: Any,
    selections: list[str] | None,
    prefetch: dict[str, Any] | None,
) -> AlemtuzumabOrder | None:
    """The first Lemtrada order under review (order-select: selections only), else None."""
    drafts = draft_resources(draft_orders)
    wanted = set(selections) if hook == "order-select" and selections is not None else None
    for resource in drafts:
        if resource.get("resourceType") != "MedicationRequest":
            continue
        if wanted is not None and f"MedicationRequest/{resource.get('id')}" not in wanted:
            continue
        try:
            codes, words, how = _medication_of(resource, drafts, prefetch)
        except Malformed:
            continue
        if classify(codes, words) is Product.LEMTRADA:
            lemtrada = value_set("alemtuzumab-lemtrada-rxnorm")
            code = lemtrada.matches_any(list(codes))
            matched = f"RxNorm {code[1]} via {how}" if code else f"name in text via {how}"
            return AlemtuzumabOrder(resource, matched, codes)
    return None


def planned_start(request: dict[str, Any], today: date) -> tuple[date, str]:
    """T0: earliest dosage bounds start or timing event; else authoredOn; else today."""
    starts = dosage_starts(request)
    if starts:
        return min(span.earliest for span in starts), "dosage timing start"
    authored = parse_date(request.get("authoredOn"))
    if authored is not None:
        return authored.earliest, "authoredOn"
    return today, "today (the order has no start date)"
