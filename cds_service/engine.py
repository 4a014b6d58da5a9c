"""One hook call end to end, without HTTP: find the order, gather data, evaluate, build cards.

The HTTP layer and the `cds-service check` command both call `answer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .cards import build_cards
from .domain.evaluate import evaluate
from .domain.findings import Finding
from .domain.orders import (
    AlemtuzumabOrder,
    OrderContext,
    UnreadableOrder,
    draft_resources,
    planned_start,
    scan_orders,
)
from .domain.policy import load_policy
from .domain.record import PatientRecord
from .domain.reminders import summary_reminders
from .errors import BadRequest, PreconditionFailed
from .fhir.prefetch import Fetched, Fetcher, resolve_prefetch
from .hook_request import HookRequest
from .services import PREFETCH_TYPES, ServiceDefinition, prefetch_templates


@dataclass
class Answer:
    """The response body and what went into it (for logs, metrics and the CLI)."""

    body: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    order: OrderContext | None = None
    origin: dict[str, str] = field(default_factory=dict)
    record: PatientRecord | None = None
    reminders: tuple[str, ...] = ()
    """The summary card's reminders (markdown lines), for the CLI to print as they were sent."""


def answer(request: HookRequest, service: ServiceDefinition, today: date,
           fetcher: Fetcher | None = None) -> Answer:
    """Cards for one hook request; other drugs get {"cards": []} before any data is read."""
    order = find_order(request, fetcher)
    if order is None:
        return Answer({"cards": []})
    policy = load_policy()
    data = resolve_prefetch(request, prefetch_templates(), PREFETCH_TYPES, fetcher)
    record = PatientRecord.build(request.patient_id, data.values, data.no_data)
    t0, t0_source = planned_start(order.request, today)
    context = OrderContext(
        hook=request.hook, order=order, t0=t0, t0_source=t0_source,
        draft_orders=tuple(draft_resources(request.context.get("draftOrders"))),
    )
    findings = evaluate(record, context, policy)
    reminders = summary_reminders(policy)
    cards = build_cards(findings, context, request.hook_instance, request.patient_id, policy,
                        reminders=reminders)
    return Answer({"cards": cards}, findings, context, data.origin, record, reminders)


def find_order(request: HookRequest, fetcher: Fetcher | None) -> AlemtuzumabOrder | None:
    """The alemtuzumab order under review. A Medication that no order carries or names is read
    from the FHIR server (one round trip, within the deadline); without one, or when the read
    fails, 412: an unidentifiable order could be alemtuzumab, so "no cards" would be a guess."""
    drafts = request.context.get("draftOrders")
    try:
        scan = scan_orders(request.hook, drafts, request.selections, request.prefetch)
        if scan.order is not None or not scan.unidentified:
            return scan.order
        read = read_medications(request, scan.unidentified, fetcher)
        return scan_orders(request.hook, drafts, request.selections, request.prefetch,
                           read).order
    except UnreadableOrder as exc:
        # exc.order is the sender's reference: named by its JSON path only (never echoed).
        raise BadRequest(f"A draft order under review cannot be evaluated: {exc.detail}.",
                         ["context.draftOrders"]) from None


def read_medications(request: HookRequest, references: tuple[str, ...],
                     fetcher: Fetcher | None) -> list[dict[str, Any]]:
    """The referenced Medications, read from the request's fhirServer."""
    # Counted, never quoted: the references are the sender's text.
    names = "the Medication it references" if len(references) == 1 else \
        f"the {len(references)} Medications they reference"
    are = "is" if len(references) == 1 else "are"
    base = (request.fhir_server or "").rstrip("/")
    queries: dict[str, str] = {}
    for i, reference in enumerate(references):
        relative = reference[len(base) + 1:] if base and reference.startswith(base + "/") \
            else reference
        if relative.startswith("Medication/"):
            queries[f"medication-{i}"] = relative
    if fetcher is None or not base or len(queries) < len(references):
        raise PreconditionFailed(
            f"The medication of an order under review cannot be identified: {names} {are} not in "
            "draftOrders, prefetch or contained resources (medicationReference), and cannot be "
            "read from the request's fhirServer. Include the Medication in draftOrders.",
            ["context.draftOrders"])
    try:
        fetched = fetcher(request, queries)
    except PreconditionFailed as exc:
        raise PreconditionFailed(
            f"The medication of an order under review cannot be identified: reading {names} "
            f"from the fhirServer failed ({exc.message})", ["context.draftOrders"]) from None
    values = [value.value if isinstance(value, Fetched) else value for value in fetched.values()]
    return [v for v in values if isinstance(v, dict) and v.get("resourceType") == "Medication"]
