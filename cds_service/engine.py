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
from .domain.orders import OrderContext, draft_resources, find_alemtuzumab_order, planned_start
from .domain.policy import load_policy
from .domain.record import PatientRecord
from .domain.reminders import summary_reminders
from .fhir.prefetch import Fetcher, resolve_prefetch
from .hook_request import HookRequest
from .services import PREFETCH_TYPES, ServiceDefinition, prefetch_templates


@dataclass
class Answer:
    """The response body and what went into it (for logs, metrics and the CLI)."""

    body: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    order: OrderContext | None = None
    origin: dict[str, str] = field(default_factory=dict)


def answer(request: HookRequest, service: ServiceDefinition, today: date,
           fetcher: Fetcher | None = None) -> Answer:
    """Cards for one hook request; other drugs get {"cards": []} before any data is read."""
    order = find_alemtuzumab_order(request.hook, request.context.get("draftOrders"),
                                   request.selections, request.prefetch)
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
    cards = build_cards(findings, context, request.hook_instance, request.patient_id, policy,
                        reminders=summary_reminders(policy))
    return Answer({"cards": cards}, findings, context, data.origin)
