"""Hostile input (issue 6, item 2): one table of bad requests and what the service answers.

Every case answers a 4xx whose body is an OperationOutcome, or a 200 whose cards either equal the
clean request's cards (the hostile part bears on no check) or name the unreadable evidence and
are not an all-clear. Never a 5xx, never a hang (each case runs under a timeout in a thread),
and for the huge cases the peak Python memory (tracemalloc) stays under a bound per body byte.

What the table documents beyond "no crash":
- duplicate JSON keys: the last one wins (orjson), for `hook` and for `prefetch` alike;
- numbers beyond a double (1e400, 10**5000) are refused as invalid JSON; 2**64 is read as a float;
- the body limit is enforced from Content-Length (or while reading a chunked body) before any
  parsing: an over-limit body that is not even JSON is a 413, an at-limit one a 400;
- a draftOrders Bundle the service cannot read (wrong types, unreadable medication or start
  date) is a 400 naming the path, never `{"cards": []}`: that would be a silent all-clear.
"""

from __future__ import annotations

import copy
import io
import json
import threading
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fixture_requests import fixture_request as fixture
from flask import Flask

from cds_service.app import create_app

SELECT = "/cds-services/lemtrada-order-select"
SIGN = "/cds-services/lemtrada-order-sign"
FEEDBACK = "/cds-services/lemtrada-order-select/feedback"
CASE_TIMEOUT_SECONDS = 30.0
LIMIT = 1000
"""max_body_bytes of the app used by the body-limit rows."""


CLEAN_SELECT = fixture("eligible_patient_at_order_select")
CLEAN_SIGN = fixture("eligible_patient_at_order_sign")
PATIENT = CLEAN_SELECT["context"]["patientId"]
HIV_TEST = "Observation/hiv-ag-ab-negative"


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def edited(
    edit: Callable[[dict[str, Any]], Any], base: dict[str, Any] = CLEAN_SELECT
) -> Callable[[], bytes]:
    """A body builder: the clean request with one edit applied (built lazily, per test)."""

    def build() -> bytes:
        doc = copy.deepcopy(base)
        edit(doc)
        return encode(doc)

    return build


def raw(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def replaced(old: bytes, new: bytes, base: dict[str, Any] = CLEAN_SELECT) -> Callable[[], bytes]:
    """The clean request's JSON text with one byte sequence replaced (for what json.dumps cannot
    write: invalid UTF-8, lone surrogates, huge number literals, duplicate keys)."""

    def build() -> bytes:
        text = encode(base)
        assert old in text, old
        return text.replace(old, new, 1)

    return build


def order(doc: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = doc["context"]["draftOrders"]["entry"][0]["resource"]
    return resource


def hiv_test(doc: dict[str, Any]) -> dict[str, Any]:
    entries = doc["prefetch"]["observations"]["entry"]
    return next(e["resource"] for e in entries if e["resource"].get("id") == "hiv-ag-ab-negative")


def with_note(text_json: bytes) -> Callable[[], bytes]:
    """The clean request whose order carries a note with the given JSON string literal."""
    return replaced(
        b'"resourceType": "MedicationRequest"',
        b'"note": [{"text": ' + text_json + b'}], "resourceType": "MedicationRequest"',
    )


def set_at(getter: Callable[[dict[str, Any]], Any], key: str, value: Any) -> Callable[[], bytes]:
    return edited(lambda doc: getter(doc).__setitem__(key, value))


def other_drug_order(i: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"amlodipine-{i}",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}],
            "text": "amlodipine 5 mg tablet",
        },
    }


def thousands_of_orders(base: dict[str, Any]) -> Callable[[], bytes]:
    """5 000 draft orders for another drug with the one alemtuzumab order in the middle."""

    def edit(doc: dict[str, Any]) -> None:
        entries = doc["context"]["draftOrders"]["entry"]
        others = [{"resource": other_drug_order(i)} for i in range(5000)]
        doc["context"]["draftOrders"]["entry"] = others[:2500] + entries + others[2500:]

    return edited(edit, base)


def nested_bundles(depth: int) -> dict[str, Any]:
    outer: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": []}
    current = outer
    for _ in range(depth):
        inner: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": []}
        current["entry"].append({"resource": inner})
        current = inner
    return outer


def nested_extensions(depth: int) -> list[dict[str, Any]]:
    top: list[dict[str, Any]] = [{"url": "http://example.org/x"}]
    current = top[0]
    for _ in range(depth):
        current["extension"] = [{"url": "http://example.org/x"}]
        current = current["extension"][0]
    return top


def feedback_item(**extra: Any) -> dict[str, Any]:
    return {
        "card": "7eadc5a4-02e6-518d-8c59-5d1bfce9c746",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-01-12T10:05:31Z",
        **extra,
    }


# -- expectations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """A 4xx OperationOutcome whose diagnostics or expression mention `mentions`."""

    status: int
    mentions: str


@dataclass(frozen=True)
class SameCards:
    """200 with exactly the cards of the clean request: the hostile part bears on no check."""

    clean: dict[str, Any] = field(default_factory=lambda: CLEAN_SELECT)


@dataclass(frozen=True)
class FeedbackStored:
    """200 with `{}`: the feedback was accepted."""


@dataclass(frozen=True)
class Unreadable:
    """200; the checklist's `topic` is not met or unknown and names `reference` (unreadable), and
    nothing is an all-clear."""

    topic: str
    reference: str


@dataclass(frozen=True)
class NotAllClear:
    """200; the checklist's `topic` is a warning or critical and so is the summary."""

    topic: str


@dataclass(frozen=True)
class Case:
    body: Callable[[], bytes]
    expect: Refused | SameCards | FeedbackStored | Unreadable | NotAllClear
    url: str = SELECT
    memory_per_byte: float | None = None
    """When set: tracemalloc peak while answering must stay under this many bytes per body byte."""
    environ: dict[str, Any] | None = None
    stream: bool = False
    """Send the body as a stream without Content-Length (as a chunked upload arrives)."""
    limited: bool = False
    """Use the app whose max_body_bytes is LIMIT."""


BAD_JSON = "not valid JSON"
NOT_OBJECT = "must be a JSON object"

CASES: list[Any] = [
    # --- malformed JSON and text -------------------------------------------------------------
    pytest.param(
        Case(lambda: encode(CLEAN_SELECT)[:700], Refused(400, BAD_JSON)),
        id="a request cut off in the middle is refused as invalid JSON",
    ),
    pytest.param(
        Case(raw(b'{"hook": "order-select",}'), Refused(400, BAD_JSON)),
        id="a trailing comma is refused as invalid JSON",
    ),
    pytest.param(
        Case(replaced(b'"value": 12', b'"value": NaN'), Refused(400, BAD_JSON)),
        id="NaN as a dose is refused as invalid JSON",
    ),
    pytest.param(
        Case(lambda: b"\xef\xbb\xbf" + encode(CLEAN_SELECT), Refused(400, BAD_JSON)),
        id="a byte order mark before the JSON is refused",
    ),
    pytest.param(
        Case(with_note(b'"bad \xc3\x28 byte"'), Refused(400, BAD_JSON)),
        id="invalid UTF-8 bytes inside a note are refused",
    ),
    pytest.param(
        Case(replaced(b'"order-select"', b'"order-\xc0\xafselect"'), Refused(400, BAD_JSON)),
        id="an overlong UTF-8 encoding in the hook name is refused",
    ),
    pytest.param(
        Case(with_note(b'"lone \\ud800 surrogate"'), Refused(400, BAD_JSON)),
        id="a lone high surrogate escape in a note is refused",
    ),
    pytest.param(
        Case(replaced(b'"hookInstance": "', b'"hookInstance": "\\udc00'), Refused(400, BAD_JSON)),
        id="a lone low surrogate escape in hookInstance is refused",
    ),
    # --- wrong JSON types: the envelope --------------------------------------------------------
    pytest.param(Case(raw(b"[]"), Refused(400, NOT_OBJECT)), id="a body that is an array"),
    pytest.param(Case(raw(b"42"), Refused(400, NOT_OBJECT)), id="a body that is a number"),
    pytest.param(
        Case(raw(b'"order-select"'), Refused(400, NOT_OBJECT)), id="a body that is a string"
    ),
    pytest.param(Case(raw(b"null"), Refused(400, NOT_OBJECT)), id="a body that is null"),
    pytest.param(Case(raw(b"true"), Refused(400, NOT_OBJECT)), id="a body that is true"),
    pytest.param(
        Case(edited(lambda d: d.__setitem__("hook", ["order-select"])), Refused(400, "'hook'")),
        id="hook as an array",
    ),
    pytest.param(
        Case(edited(lambda d: d.__setitem__("hook", None)), Refused(400, "'hook'")),
        id="hook as null",
    ),
    pytest.param(
        Case(edited(lambda d: d.__setitem__("hookInstance", 7)), Refused(400, "'hookInstance'")),
        id="hookInstance as a number",
    ),
    pytest.param(
        Case(edited(lambda d: d.__setitem__("context", [])), Refused(400, "'context'")),
        id="context as an array",
    ),
    pytest.param(
        Case(edited(lambda d: d.__setitem__("context", "patient")), Refused(400, "'context'")),
        id="context as a string",
    ),
    pytest.param(
        Case(set_at(lambda d: d["context"], "patientId", 12345), Refused(400, "context.patientId")),
        id="patientId as a number",
    ),
    pytest.param(
        Case(set_at(lambda d: d["context"], "selections", [1]), Refused(400, "context.selections")),
        id="a selection that is a number",
    ),
    pytest.param(
        Case(
            set_at(lambda d: d["context"], "draftOrders", []), Refused(400, "context.draftOrders")
        ),
        id="draftOrders as an array",
    ),
    pytest.param(
        Case(
            edited(lambda d: d["context"]["draftOrders"].pop("resourceType")),
            Refused(400, "context.draftOrders"),
        ),
        id="draftOrders without resourceType is not read as an empty Bundle",
    ),
    pytest.param(
        Case(
            set_at(lambda d: d["context"]["draftOrders"], "entry", {}),
            Refused(400, "context.draftOrders.entry"),
        ),
        id="draftOrders entry as an object",
    ),
    pytest.param(
        Case(
            set_at(lambda d: d["context"]["draftOrders"], "entry", ["order"]),
            Refused(400, "context.draftOrders.entry[0]"),
        ),
        id="a draftOrders entry that is a string",
    ),
    pytest.param(
        Case(
            set_at(lambda d: d["context"]["draftOrders"]["entry"][0], "resource", "x"),
            Refused(400, "context.draftOrders.entry[0].resource"),
        ),
        id="a draft order resource that is a string",
    ),
    pytest.param(
        Case(
            set_at(order, "resourceType", 5), Refused(400, "context.draftOrders.entry[0].resource")
        ),
        id="a draft order whose resourceType is a number",
    ),
    pytest.param(
        Case(
            set_at(lambda d: order(d)["medicationCodeableConcept"], "coding", "x"),
            Refused(400, "medicationCodeableConcept"),
        ),
        id="an order whose medication coding is a string is refused, not skipped",
    ),
    pytest.param(
        Case(
            set_at(lambda d: order(d)["medicationCodeableConcept"]["coding"][0], "code", 1594663),
            Refused(400, "medicationCodeableConcept"),
        ),
        id="an order whose RxNorm code is a number is refused, not skipped",
    ),
    pytest.param(
        Case(
            set_at(order, "medicationCodeableConcept", []),
            Refused(400, "medicationCodeableConcept"),
        ),
        id="an order whose medication is an array is refused, not skipped",
    ),
    pytest.param(
        Case(
            set_at(order, "medicationReference", "Medication/1"),
            Refused(400, "medicationReference"),
        ),
        id="an order whose medicationReference is a string is refused",
    ),
    pytest.param(
        Case(
            set_at(
                lambda d: order(d)["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"],
                "start",
                20261207,
            ),
            Refused(400, "boundsPeriod.start"),
        ),
        id="a planned start date that is a number is refused, not replaced by authoredOn",
    ),
    pytest.param(
        Case(
            set_at(
                lambda d: order(d)["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"],
                "start",
                "next Monday",
            ),
            Refused(400, "boundsPeriod.start"),
        ),
        id="a planned start date in words is refused",
    ),
    pytest.param(
        Case(set_at(order, "authoredOn", 20261123), SameCards()),
        id="authoredOn as a number does not matter when the dosage gives the start",
    ),
    pytest.param(
        Case(set_at(order, "subject", "Patient/x"), SameCards()),
        id="an order subject as a string is not read: the context names the patient",
    ),
    pytest.param(
        Case(set_at(order, "dosageInstruction", {"text": "12 mg"}), NotAllClear("dose")),
        id="a dosage that is not an array is a warning that dose and route are unknown",
    ),
    pytest.param(
        Case(edited(lambda d: d.__setitem__("prefetch", [])), Refused(400, "'prefetch'")),
        id="prefetch as an array",
    ),
    pytest.param(
        Case(set_at(lambda d: d["prefetch"], "conditions", "none"), Refused(400, "conditions")),
        id="a prefetch value that is a string",
    ),
    pytest.param(
        Case(set_at(lambda d: d["prefetch"], "patient", 5), Refused(400, "patient")),
        id="the patient prefetch as a number",
    ),
    pytest.param(
        Case(
            set_at(lambda d: d["prefetch"]["conditions"], "entry", {}),
            Refused(400, "prefetch.conditions"),
        ),
        id="a prefetch Bundle whose entry is an object",
    ),
    pytest.param(
        Case(
            edited(lambda d: hiv_test(d).pop("resourceType")), Refused(400, "prefetch.observations")
        ),
        id="a prefetched resource without resourceType",
    ),
    pytest.param(
        Case(edited(lambda d: d.__setitem__("fhirServer", 8080)), Refused(400, "fhirServer")),
        id="fhirServer as a number",
    ),
    pytest.param(
        Case(
            edited(
                lambda d: d.update(
                    fhirServer="https://ehr.example.org/fhir", fhirAuthorization="Bearer abc"
                )
            ),
            Refused(400, "fhirAuthorization"),
        ),
        id="fhirAuthorization as a string",
    ),
    # --- wrong JSON types inside evidence: read as unreadable, never as absent or fine ----------
    pytest.param(
        Case(set_at(hiv_test, "code", "HIV test"), Unreadable("hiv-screening", HIV_TEST)),
        id="an HIV test whose code is a string is named as unreadable",
    ),
    pytest.param(
        Case(
            set_at(hiv_test, "effectiveDateTime", 20261008), Unreadable("hiv-screening", HIV_TEST)
        ),
        id="an HIV test whose date is a number is named as unreadable",
    ),
    pytest.param(
        Case(set_at(hiv_test, "subject", 5), Unreadable("hiv-screening", HIV_TEST)),
        id="an HIV test whose subject is a number is named as unreadable",
    ),
    pytest.param(
        Case(set_at(hiv_test, "status", 5), Unreadable("hiv-screening", HIV_TEST)),
        id="an HIV test whose status is a number is named as unreadable",
    ),
    pytest.param(
        Case(
            set_at(hiv_test, "extension", nested_extensions(300)),
            Unreadable("hiv-screening", HIV_TEST),
        ),
        id="an HIV test nested too deeply to validate is named as unreadable",
    ),
    pytest.param(
        Case(set_at(lambda d: d["prefetch"]["patient"], "birthDate", 19800101), NotAllClear("age")),
        id="a birth date that is a number leaves the age unknown",
    ),
    pytest.param(
        Case(
            set_at(lambda d: d["prefetch"]["conditions"]["entry"][0]["resource"], "code", []),
            NotAllClear("eligibility-summary"),
        ),
        id="a condition whose code is an array is unreadable, not absent",
    ),
    pytest.param(
        Case(
            set_at(
                lambda d: d["prefetch"]["immunizations"]["entry"][0]["resource"],
                "occurrenceDateTime",
                {},
            ),
            NotAllClear("eligibility-summary"),
        ),
        id="a vaccination whose date is an object is unreadable, not absent",
    ),
    # --- deep nesting ------------------------------------------------------------------------
    pytest.param(
        Case(raw(b"[" * 10_000 + b"]" * 10_000), Refused(400, BAD_JSON), memory_per_byte=20),
        id="10 000 nested arrays are refused, not a RecursionError",
    ),
    pytest.param(
        Case(
            raw(b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
            Refused(400, BAD_JSON),
            memory_per_byte=20,
        ),
        id="10 000 nested objects are refused",
    ),
    pytest.param(
        Case(
            lambda: encode(CLEAN_SELECT)[:-1] + b', "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            Refused(400, BAD_JSON),
        ),
        id="10 000 nested arrays after a valid request are refused",
    ),
    pytest.param(
        Case(set_at(lambda d: d["prefetch"], "extra", nested_bundles(300)), SameCards()),
        id="300 Bundles nested in an undeclared prefetch key hold nothing to read",
    ),
    pytest.param(
        Case(
            raw(b'{"feedback": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
            Refused(400, BAD_JSON),
            url=FEEDBACK,
        ),
        id="feedback nested 10 000 deep is refused",
    ),
    # --- duplicate keys: the last one wins ---------------------------------------------------
    pytest.param(
        Case(lambda: b'{"hook": "order-sign", ' + encode(CLEAN_SELECT)[1:], SameCards()),
        id="two hook keys: the last one (order-select) wins",
    ),
    pytest.param(
        Case(
            lambda: encode(CLEAN_SELECT)[:-1] + b', "hook": "order-sign"}',
            Refused(400, "names another"),
        ),
        id="two hook keys: a last order-sign is refused by the order-select service",
    ),
    pytest.param(
        Case(
            lambda: encode(CLEAN_SELECT)[:-1] + b', "prefetch": {}}', Refused(412, "not prefetched")
        ),
        id="two prefetch keys: the last empty one wins and nothing is mixed in",
    ),
    pytest.param(
        Case(
            raw(
                b'{"feedback": [{"card": "7eadc5a4-02e6-518d-8c59-5d1bfce9c746", '
                b'"outcome": "accepted", "outcome": "overridden", '
                b'"outcomeTimestamp": "2026-01-12T10:05:31Z"}]}'
            ),
            FeedbackStored(),
            url=FEEDBACK,
        ),
        id="feedback with two outcome keys is read with the last one",
    ),
    # --- huge strings and numbers ------------------------------------------------------------
    pytest.param(
        Case(with_note(b'"' + b"x" * 5_000_000 + b'"'), SameCards(), memory_per_byte=20),
        id="a 5 MB note on the order answers the same cards in bounded memory",
    ),
    pytest.param(
        Case(
            lambda: encode(
                {"feedback": [feedback_item(overrideReason={"userComment": "y" * 5_000_000})]}
            ),
            Refused(400, "limit of 10000 characters"),
            url=FEEDBACK,
            memory_per_byte=20,
        ),
        id="feedback with a 5 MB comment is refused as over the limit in bounded memory",
    ),
    pytest.param(
        Case(
            lambda: encode(
                {"feedback": [feedback_item(overrideReason={"userComment": "y" * 10_000})]}
            ),
            FeedbackStored(),
            url=FEEDBACK,
        ),
        id="feedback with a comment of 10,000 characters is stored",
    ),
    pytest.param(
        Case(replaced(b'"value": 12', b'"value": 1e400'), Refused(400, BAD_JSON)),
        id="a dose of 1e400 is refused as beyond a double",
    ),
    pytest.param(
        Case(replaced(b'"value": 12', b'"value": -1e400'), Refused(400, BAD_JSON)),
        id="a dose of -1e400 is refused as beyond a double",
    ),
    pytest.param(
        Case(
            replaced(b'"value": 12', b'"value": 1' + b"0" * 5000),
            Refused(400, BAD_JSON),
            memory_per_byte=20,
        ),
        id="a 5001-digit integer dose is refused",
    ),
    pytest.param(
        Case(replaced(b'"value": 12', b'"value": 18446744073709551616'), NotAllClear("dose")),
        id="a dose of 2 to the 64th is read as a float and flagged as the wrong dose",
    ),
    pytest.param(
        Case(replaced(b'"value": 12', b'"value": 1e-400'), NotAllClear("dose")),
        id="a dose of 1e-400 underflows to 0 mg and is flagged as the wrong dose",
    ),
    # --- the body limit: refused before parsing ----------------------------------------------
    pytest.param(
        Case(lambda: encode(CLEAN_SELECT), Refused(413, "exceeds the limit"), limited=True),
        id="a valid request over the body limit is a 413",
    ),
    pytest.param(
        Case(raw(b"{" * (LIMIT + 1)), Refused(413, "exceeds the limit"), limited=True),
        id="an invalid body one byte over the limit is a 413, so it was never parsed",
    ),
    pytest.param(
        Case(raw(b"{" * LIMIT), Refused(400, BAD_JSON), limited=True),
        id="an invalid body exactly at the limit is parsed and refused with a 400",
    ),
    pytest.param(
        Case(
            raw(b"{}"),
            Refused(413, "exceeds the limit"),
            limited=True,
            environ={"CONTENT_LENGTH": str(LIMIT * 1000)},
        ),
        id="a Content-Length over the limit is a 413 before the body is read",
    ),
    pytest.param(
        Case(
            raw(b"[" * (LIMIT * 50)), Refused(413, "exceeds the limit"), limited=True, stream=True
        ),
        id="a chunked body without Content-Length is cut off at the limit with a 413",
    ),
    pytest.param(
        Case(
            raw(b"{" * (LIMIT + 1)), Refused(413, "exceeds the limit"), url=FEEDBACK, limited=True
        ),
        id="invalid feedback over the limit is a 413",
    ),
    pytest.param(
        Case(raw(b"{" * (LIMIT + 1)), Refused(413, "exceeds the limit"), url=SIGN, limited=True),
        id="an invalid order-sign body over the limit is a 413",
    ),
    # --- many draft orders -------------------------------------------------------------------
    pytest.param(
        Case(thousands_of_orders(CLEAN_SELECT), SameCards(), memory_per_byte=30),
        id="5 000 draft orders with one alemtuzumab selected answer the same cards",
    ),
    pytest.param(
        Case(thousands_of_orders(CLEAN_SIGN), SameCards(CLEAN_SIGN), url=SIGN, memory_per_byte=30),
        id="5 000 draft orders at order-sign answer the same cards",
    ),
    # --- resources of unknown types ----------------------------------------------------------
    pytest.param(
        Case(
            edited(
                lambda d: d["context"]["draftOrders"]["entry"].append(
                    {"resource": {"resourceType": "Spaceship", "id": "enterprise"}}
                )
            ),
            SameCards(),
        ),
        id="a Spaceship among the draft orders is not an order and is ignored",
    ),
    pytest.param(
        Case(
            edited(
                lambda d: d["prefetch"]["observations"]["entry"].append(
                    {
                        "resource": {
                            "resourceType": "Spaceship",
                            "id": "x",
                            "subject": {"reference": f"Patient/{PATIENT}"},
                        }
                    }
                )
            ),
            SameCards(),
        ),
        id="a Spaceship among the observations is ignored",
    ),
    pytest.param(
        Case(set_at(hiv_test, "resourceType", "Spaceship"), NotAllClear("hiv-screening")),
        id="an HIV result relabelled as a Spaceship no longer counts as a test",
    ),
    pytest.param(
        Case(
            set_at(lambda d: d["prefetch"], "observations", {"resourceType": "Spaceship"}),
            NotAllClear("eligibility-summary"),
        ),
        id="a Spaceship instead of the observations Bundle leaves the screening unknown",
    ),
    pytest.param(
        Case(
            set_at(
                lambda d: d["context"]["draftOrders"]["entry"][0]["resource"],
                "resourceType",
                "MedicationOrder",
            ),
            SameCards({"cards": []}),
        ),
        id="an order typed as the DSTU2 MedicationOrder is not a MedicationRequest",
    ),
    # --- order-sign --------------------------------------------------------------------------
    pytest.param(
        Case(lambda: encode(CLEAN_SIGN)[:500], Refused(400, BAD_JSON), url=SIGN),
        id="a truncated order-sign request is refused",
    ),
    pytest.param(
        Case(
            edited(lambda d: d["context"].__setitem__("draftOrders", "all"), CLEAN_SIGN),
            Refused(400, "context.draftOrders"),
            url=SIGN,
        ),
        id="order-sign draftOrders as a string",
    ),
    pytest.param(
        Case(raw(b"[" * 10_000 + b"]" * 10_000), Refused(400, BAD_JSON), url=SIGN),
        id="order-sign nested 10 000 deep is refused",
    ),
]


@pytest.fixture(scope="module")
def apps() -> dict[str, Flask]:
    """The default app and one whose body limit is LIMIT bytes (both with in-memory storage)."""
    return {
        "default": create_app(testing=True),
        "limited": create_app(testing=True, max_body_bytes=LIMIT),
    }


@pytest.fixture(scope="module")
def clean_cards(apps: dict[str, Flask]) -> dict[str, Any]:
    """The responses to the clean requests, to compare hostile variants with."""
    client = apps["default"].test_client()
    out = {}
    for url, doc in ((SELECT, CLEAN_SELECT), (SIGN, CLEAN_SIGN)):
        response = client.post(url, json=doc)
        assert response.status_code == 200
        out[doc["hookInstance"] + url] = response.get_json()
    return out


def answer_within_timeout(app: Flask, case: Case, body: bytes) -> tuple[Any, int]:
    """POST the body in a worker thread; a hang fails the test instead of stalling CI.

    Returns (response, tracemalloc peak in bytes while answering)."""
    client = app.test_client()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            kwargs: dict[str, Any] = {"content_type": "application/json"}
            environ = dict(case.environ or {})
            if case.stream:
                kwargs["input_stream"] = io.BytesIO(body)
                environ["wsgi.input_terminated"] = True  # what a server sets for chunked bodies
            else:
                kwargs["data"] = body
            outcome["response"] = client.post(case.url, environ_overrides=environ, **kwargs)
        except BaseException as exc:  # reported by the test below
            outcome["error"] = exc

    tracemalloc.start()
    try:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(CASE_TIMEOUT_SECONDS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not worker.is_alive(), f"no answer within {CASE_TIMEOUT_SECONDS} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["response"], peak


def cards_by_topic(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {card["source"]["topic"]["code"]: card for card in body["cards"]}


@pytest.mark.parametrize("case", CASES)
def test_hostile_request_gets_a_4xx_outcome_or_safe_cards(
    apps: dict[str, Flask], clean_cards: dict[str, Any], case: Case
) -> None:
    """Each hostile request gets its documented answer: never a 5xx, a hang or unbounded memory."""
    body = case.body()
    app = apps["limited" if case.limited else "default"]
    response, peak = answer_within_timeout(app, case, body)
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    payload = response.get_json()
    if case.memory_per_byte is not None:
        assert peak < case.memory_per_byte * len(body), (
            f"peak {peak / len(body):.1f} bytes per body byte"
        )
    expect = case.expect
    if isinstance(expect, Refused):
        assert response.status_code == expect.status, payload
        assert payload["resourceType"] == "OperationOutcome"
        issue = payload["issue"][0]
        assert expect.mentions in " ".join([issue["diagnostics"], *issue.get("expression", [])])
        assert "Traceback" not in response.get_data(as_text=True)
        return
    assert response.status_code == 200, payload
    if isinstance(expect, FeedbackStored):
        assert payload == {}
        return
    if isinstance(expect, SameCards):
        if "hookInstance" in expect.clean:
            assert payload == clean_cards[expect.clean["hookInstance"] + case.url]
        else:
            assert payload == expect.clean
        return
    cards = cards_by_topic(payload)
    summary = cards["eligibility-summary"]
    assert summary["indicator"] != "info", "an all-clear"
    assert set(cards) - {"eligibility-summary"}, "no card besides the summary"
    if expect.topic == "eligibility-summary":  # the summary alone says: not an all-clear
        return
    checks = summary["extension"]["org.example.cds-service.checklist"]["checks"]
    check = next(c for c in checks if c["topic"] == expect.topic)
    assert check["status"] in ("not-met", "unknown"), check
    assert check["indicator"] in ("warning", "critical")
    if isinstance(expect, Unreadable):
        assert {"reference": expect.reference} in check["evidence"], check
