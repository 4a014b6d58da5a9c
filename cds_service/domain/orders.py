"""Which draft order is alemtuzumab (Lemtrada for MS), and when it is planned to start (T0).

This runs first on every call and reads only the draft orders (and, for a medicationReference,
the Medication it points to), so an order for any other drug is answered before anything else
in the request is looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum
from functools import cached_property
from typing import Any

from .fhirdata import Code, Malformed, parse_date
from .record import CONTAINED, dosage_starts, iter_resources, name_medication
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
    course: tuple[AlemtuzumabOrder, ...] = ()
    """Every alemtuzumab order under review (one per infusion day, say): one course, `order`
    first among them. Empty means `order` alone."""

    @property
    def course_orders(self) -> tuple[AlemtuzumabOrder, ...]:
        """The orders of the course under review, `order` included."""
        return self.course or (self.order,)


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
        return [
            r
            for value in (self.prefetch or {}).values()
            for r in iter_resources(value)
            if r.get("resourceType") == "Medication"
        ]

    def pools(self) -> Iterator[Sequence[dict[str, Any]]]:
        """The pools in the order they are searched; each built only when it is reached."""
        yield self.in_drafts
        yield self.in_prefetch
        yield self.read


UNRESOLVED = "medicationReference display"
"""How an order's medication was read when its reference resolved nowhere (display only)."""


def _medication_of(
    request: dict[str, Any], sources: MedicationSources
) -> tuple[tuple[Code, ...], str, str]:
    """(codes, words, how) of a request's medication: inline, or the referenced Medication
    (contained for '#id'; else draftOrders, then prefetch, then read from the FHIR server)."""
    named = name_medication(request, sources.pools())
    if named.inline:
        return named.codes, named.words, "medicationCodeableConcept"
    if not isinstance(request.get("medicationReference"), dict):
        return (), "", "no medication"
    if named.found_in is None:
        return (), named.words, UNRESOLVED
    where = _POOL_NAMES[named.found_in]
    return named.codes, named.words, f"medicationReference to Medication in {where}"


_POOL_NAMES = {
    CONTAINED: "the order's contained resources",
    0: "draftOrders",
    1: "prefetch",
    2: "the FHIR server",
}
"""MedicationSources.pools() in order, as the sentence saying how an order was recognised
names them."""


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
    pending: tuple[dict[str, Any], ...] = ()
    """Orders under review whose medicationReference resolved nowhere in the request, in draft
    order: the only ones a Medication read from the FHIR server can change."""
    sources: MedicationSources | None = None
    course: tuple[AlemtuzumabOrder, ...] = ()
    """Every alemtuzumab order under review, in draft order: EHRs often draft one order per
    infusion day, and all of them are one course with one card set."""

    def identify(self, read: Sequence[dict[str, Any]]) -> AlemtuzumabOrder | None:
        """The alemtuzumab order once the Medications read from the FHIR server are known (the
        request is not scanned again: only the pending orders are looked at)."""
        if self.order is not None or self.sources is None:
            return self.order
        sources = MedicationSources(self.sources.drafts, self.sources.prefetch, read)
        for resource in self.pending:
            order = _as_lemtrada(resource, *_read_medication(resource, sources))
            if order is not None:
                return order
        return None


def _read_medication(
    resource: dict[str, Any], sources: MedicationSources
) -> tuple[tuple[Code, ...], str, str]:
    """(codes, words, how) of an order's medication; UnreadableOrder when the Medication it
    names cannot be read."""
    try:
        return _medication_of(resource, sources)
    except Malformed as exc:
        raise UnreadableOrder(
            f"MedicationRequest/{resource.get('id')}", f"its Medication cannot be read ({exc})"
        ) from None


def _as_lemtrada(
    resource: dict[str, Any], codes: tuple[Code, ...], words: str, how: str
) -> AlemtuzumabOrder | None:
    """The order as an AlemtuzumabOrder when its medication is Lemtrada, else None."""
    if classify(codes, words) is not Product.LEMTRADA:
        return None
    lemtrada = value_set("alemtuzumab-lemtrada-rxnorm")
    code = lemtrada.matches_any(list(codes))
    matched = f"RxNorm {code[1]} via {how}" if code else f"name in text via {how}"
    return AlemtuzumabOrder(resource, matched, codes)


def scan_orders(
    hook: str,
    draft_orders: Any,
    selections: list[str] | None,
    prefetch: dict[str, Any] | None,
) -> OrderScan:
    """Find the Lemtrada orders under review (order-select: selections only); the first is the
    scan's order, all of them its course. Once a selected order is Lemtrada, the other Lemtrada
    orders already drafted in the session (draftOrders) join its course: a course drafted one
    order per infusion day is often selected one order at a time.

    An order whose medication cannot be identified at all (a medicationReference resolved nowhere,
    without display) is reported, not skipped: it could be the alemtuzumab order. A referenced
    Medication whose code cannot be read raises UnreadableOrder."""
    drafts = draft_resources(draft_orders)
    sources = MedicationSources(drafts, prefetch)
    wanted = set(selections) if hook == "order-select" and selections is not None else None
    unidentified: list[str] = []
    pending: list[dict[str, Any]] = []
    course: list[AlemtuzumabOrder] = []
    unselected: list[dict[str, Any]] = []
    for resource in drafts:
        if resource.get("resourceType") != "MedicationRequest":
            continue
        reference = f"MedicationRequest/{resource.get('id')}"
        if wanted is not None and reference not in wanted:
            unselected.append(resource)
            continue
        if course:  # the course is found: other orders only add to it, never fail the call
            try:
                order = _as_lemtrada(resource, *_read_medication(resource, sources))
            except UnreadableOrder:
                continue
            if order is not None:
                course.append(order)
            continue
        codes, words, how = _read_medication(resource, sources)
        ref = resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        on_a_server = isinstance(target, str) and bool(target) and not target.startswith("#")
        if not codes and not words.strip():
            if on_a_server:
                unidentified.append(str(target))
                pending.append(resource)
            continue
        if how == UNRESOLVED and on_a_server:
            pending.append(resource)  # named by display only: a Medication read may say more
        order = _as_lemtrada(resource, codes, words, how)
        if order is not None:
            course.append(order)
    if course:
        for resource in unselected:  # earlier orders of the same course, drafted before
            if resource.get("status") in ("cancelled", "entered-in-error", "revoked"):
                continue
            try:
                order = _as_lemtrada(resource, *_read_medication(resource, sources))
            except UnreadableOrder:
                continue
            if order is not None:
                course.append(order)
        return OrderScan(course[0], course=tuple(course))
    return OrderScan(None, tuple(unidentified), tuple(pending), sources)


def course_start(
    course: Sequence[AlemtuzumabOrder], today: date
) -> tuple[AlemtuzumabOrder, date, str]:
    """All alemtuzumab orders under review are one course: T0 is the earliest planned start,
    and the order that starts it is the one the order checks read (ties: draft order)."""
    starts = [(planned_start(order.request, today), i) for i, order in enumerate(course)]
    (t0, source), first = min(starts, key=lambda pair: (pair[0][0], pair[1]))
    return course[first], t0, source


def planned_start(request: dict[str, Any], today: date) -> tuple[date, str]:
    """T0: earliest dosage bounds start or timing event; else authoredOn; else today."""
    starts = dosage_starts(request)
    if starts:
        return min(span.earliest for span in starts), "dosage timing start"
    authored = parse_date(request.get("authoredOn"))
    if authored is not None:
        return authored.earliest, "the date the order was written"
    return today, "today (the order has no start date)"
