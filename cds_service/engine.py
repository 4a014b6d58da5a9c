"""One hook call end to end, without HTTP: find the order, gather data, evaluate, build cards.

The HTTP layer and the `cds-service check` command both call `answer`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .cards import (
    build_cards,
    build_monitoring_cards,
    card_topic,
    suggestion_checks,
    unreadable_history_card,
)
from .domain.evaluate import evaluate
from .domain.findings import Finding
from .domain.monitoring import (
    MonitoringContext,
    deceased,
    monitoring_context,
    monitoring_dates,
    unreadable_infusions,
)
from .domain.orders import (
    OrderContext,
    OrderScan,
    UnreadableOrder,
    course_start,
    draft_resources,
    scan_orders,
)
from .domain.policy import load_policy
from .domain.record import PatientRecord
from .domain.reminders import summary_reminders
from .domain.rules.monitoring import evaluate_monitoring
from .errors import BadRequest, PreconditionFailed
from .fhir.prefetch import MEDICATION_KEY, Endpoint, Fetcher, resolve
from .hook_request import HookRequest
from .origin import Origin
from .services import PREFETCH_TYPES, ServiceDefinition, prefetch_for, prefetch_templates
from .terminology_server import TerminologyServer


@dataclass
class Answer:
    """The response body and what went into it (for logs, metrics and the CLI)."""

    body: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    order: OrderContext | None = None
    origin: dict[str, Origin] = field(default_factory=dict)
    record: PatientRecord | None = None
    reminders: tuple[str, ...] = ()
    """The summary card's reminders (markdown lines), for the CLI to print as they were sent."""
    topics: tuple[tuple[str, str], ...] = ()
    """(topic, indicator) of each card, in card order: what logs and metrics count, so they
    need not read cards themselves."""
    suggestion_checks: tuple[tuple[str, str], ...] = ()
    """(suggestion uuid, check topic) of the grouped cards' suggestions, for the audit."""
    monitoring: MonitoringContext | None = None
    """The infusion history and monitoring window of a patient-view call (None: not monitored)."""


def answer(
    request: HookRequest,
    service: ServiceDefinition,
    today: date,
    fetcher: Fetcher | None = None,
    terminology: TerminologyServer | None = None,
) -> Answer:
    """Cards for one hook request; other drugs get {"cards": []} before any data is read.

    The draft orders are scanned once; the FHIR server is reached at most once (`resolve`), for
    the keys the prefetch lacks and the Medications of orders nobody could identify together.
    When such a Medication proves to be another drug the answer is still {"cards": []}, whatever
    the prefetch lacked (its problem is raised only for the alemtuzumab order).

    With a site's `terminology` server, the record's codes no local value set lists are asked
    about before evaluation (within what remains of the call's FHIR deadline); what it places in
    a value set reaches every check through PatientRecord.member.

    patient-view (the monitoring service) has no draft orders: `answer_monitoring`."""
    if service.hook == "patient-view":
        return answer_monitoring(request, today, fetcher, terminology)
    started = time.monotonic()
    found = scan(request)
    if found.order is None and not found.unidentified:
        return Answer({"cards": []})
    endpoint = Endpoint.of(request.fhir_server, request.fhir_authorization)
    medications = (
        medication_queries(found.unidentified, endpoint, fetcher) if found.order is None else {}
    )
    try:
        data = resolve(
            request.prefetch,
            request.context,
            endpoint,
            prefetch_templates(),
            PREFETCH_TYPES,
            fetcher,
            medications,
        )
    except PreconditionFailed as exc:
        if not medications:
            raise
        raise PreconditionFailed(
            "The medication of an order under review cannot be identified: reading "
            f"{_names(found.unidentified)} from the fhirServer failed ({exc.message})",
            ["context.draftOrders"],
        ) from None
    try:
        order = found.identify(data.medications)
    except UnreadableOrder as exc:
        raise _unreadable(exc) from None
    if order is None:
        return Answer({"cards": []})
    if data.problem is not None:
        raise data.problem
    policy = load_policy()
    record = PatientRecord.build(request.patient_id, data.values, data.no_data)
    if terminology is not None:
        record.extra_members = terminology(record, started)
    course = found.course or (order,)
    order, t0, t0_source = course_start(course, today)
    context = OrderContext(
        hook=request.hook,
        order=order,
        t0=t0,
        t0_source=t0_source,
        draft_orders=tuple(draft_resources(request.context.get("draftOrders"))),
        course=course,
    )
    checked = evaluate(record, context, policy)
    findings = [finding for _, finding in checked]
    reminders = summary_reminders(policy)
    cards = build_cards(
        checked, context, request.hook_instance, request.patient_id, policy, reminders=reminders
    )
    topics = tuple((card_topic(card), str(card.get("indicator", ""))) for card in cards)
    return Answer(
        {"cards": cards},
        findings,
        context,
        data.origin,
        record,
        reminders,
        topics,
        suggestion_checks(checked, request.hook_instance),
    )


def answer_monitoring(
    request: HookRequest,
    today: date,
    fetcher: Fetcher | None = None,
    terminology: TerminologyServer | None = None,
) -> Answer:
    """The monitoring cards of one patient-view call.

    The patient's data is needed to know whether they were treated at all, so missing prefetch
    is fetched (or a 412) first, with the same semantics as the order services. A patient with
    no alemtuzumab infusion, whose monitoring has ended or who is recorded as deceased gets
    {"cards": []} before any check runs (and before the terminology server is asked)."""
    started = time.monotonic()
    templates, types = prefetch_for(request.hook)
    data = resolve(
        request.prefetch,
        request.context,
        Endpoint.of(request.fhir_server, request.fhir_authorization),
        templates,
        types,
        fetcher,
    )
    policy = load_policy()
    record = PatientRecord.build(request.patient_id, data.values, data.no_data)
    context = monitoring_context(record, today, policy)
    if context is None:
        unreadable = () if deceased(record) else unreadable_infusions(record, today)
        if not unreadable:
            return Answer({"cards": []}, origin=data.origin, record=record)
        # Not understood is never silence: say that the history could not be read.
        card = unreadable_history_card(unreadable, request.hook_instance, policy)
        return Answer(
            {"cards": [card]},
            origin=data.origin,
            record=record,
            topics=((card_topic(card), str(card["indicator"])),),
        )
    if terminology is not None:
        record.extra_members = terminology(record, started)
    checked = evaluate_monitoring(record, context, policy)
    cards = build_monitoring_cards(
        checked,
        monitoring_dates(record, context, policy),
        request.hook_instance,
        request.patient_id,
        policy,
    )
    return Answer(
        {"cards": cards},
        [finding for _, finding in checked],
        origin=data.origin,
        record=record,
        topics=tuple((card_topic(card), str(card.get("indicator", ""))) for card in cards),
        suggestion_checks=suggestion_checks(checked, request.hook_instance),
        monitoring=context,
    )


def scan(request: HookRequest) -> OrderScan:
    """The draft orders under review, scanned once for the alemtuzumab order."""
    try:
        return scan_orders(
            request.hook, request.context.get("draftOrders"), request.selections, request.prefetch
        )
    except UnreadableOrder as exc:
        raise _unreadable(exc) from None


def _unreadable(exc: UnreadableOrder) -> BadRequest:
    # exc.order is the sender's reference: named by its JSON path only (never echoed).
    return BadRequest(
        f"A draft order under review cannot be evaluated: {exc.detail}.", ["context.draftOrders"]
    )


def medication_queries(
    references: tuple[str, ...], endpoint: Endpoint, fetcher: Fetcher | None
) -> dict[str, str]:
    """{fetch key: 'Medication/id'} for the Medications unidentified orders reference on the
    request's fhirServer. An unidentifiable order could be alemtuzumab, so "no cards" would be a
    guess: 412 when they cannot all be read."""
    base = endpoint.base_url.rstrip("/")
    queries: dict[str, str] = {}
    for i, reference in enumerate(references):
        relative = (
            reference[len(base) + 1 :] if base and reference.startswith(base + "/") else reference
        )
        if relative.startswith("Medication/"):
            queries[f"{MEDICATION_KEY}{i}"] = relative
    if fetcher is None or not base or len(queries) < len(references):
        raise PreconditionFailed(
            f"The medication of an order under review cannot be identified: "
            f"{_names(references)} {'is' if len(references) == 1 else 'are'} not in "
            "draftOrders, prefetch or contained resources (medicationReference), and cannot be "
            "read from the request's fhirServer. Include the Medication in draftOrders.",
            ["context.draftOrders"],
        )
    return queries


def _names(references: tuple[str, ...]) -> str:
    # Counted, never quoted: the references are the sender's text.
    return (
        "the Medication it references"
        if len(references) == 1
        else f"the {len(references)} Medications they reference"
    )
