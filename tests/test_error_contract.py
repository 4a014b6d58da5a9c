"""Contract (issue 11, item 7, application part): a 405 names the allowed methods in `Allow`;
error bodies describe problems by JSON path and never repeat what the sender supplied; feedback
is de-duplicated on canonical values (uuid case, the instant a timestamp names), on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import test_postgres_storage as storage_tests
from fixture_requests import fixture_request

from cds_service.app import create_app
from cds_service.feedback import store_feedback, validate_feedback
from cds_service.storage import Database

SELECT = "lemtrada-order-select"
CALL = f"/cds-services/{SELECT}"
FEEDBACK = f"{CALL}/feedback"
CARD = "7eadc5a4-02e6-518d-8c59-5d1bfce9c746"
SUGGESTION = "0b8e3c0a-7c1f-4d7e-9a55-1c2b3d4e5f60"
OTHER_SUGGESTION = "1c9f4d1b-8d20-4e8f-8b66-2d3c4e5f6a71"
MARKER = "Sender-Value-7f3a"

postgres = storage_tests.postgres
url = storage_tests.url
database = storage_tests.database
count = storage_tests.count


WRONG_METHODS = [
    ("GET on a service answers which methods it takes", "get", CALL, {"OPTIONS", "POST"}),
    ("PUT on feedback", "put", FEEDBACK, {"OPTIONS", "POST"}),
    ("POST on discovery", "post", "/cds-services", {"GET", "HEAD", "OPTIONS"}),
    ("DELETE on the liveness probe", "delete", "/healthz", {"GET", "HEAD"}),
    ("POST on metrics", "post", "/metrics", {"GET", "HEAD"}),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "allowed"), WRONG_METHODS, ids=[c[0] for c in WRONG_METHODS]
)
def test_method_not_allowed_carries_an_allow_header(
    module_client: Any, case: str, method: str, path: str, allowed: set[str]
) -> None:
    """RFC 9110: a 405 lists the methods the path supports, as an OperationOutcome."""
    response = getattr(module_client, method)(path)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed
    assert response.get_json()["resourceType"] == "OperationOutcome"


def hook(**changes: Any) -> dict[str, Any]:
    doc = fixture_request("eligible_patient_at_order_select")
    doc.update(changes)
    return doc


def with_order(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = hook()
    order = doc["context"]["draftOrders"]["entry"][0]["resource"]
    change(order)
    return doc


def unidentifiable_medication(order: dict[str, Any]) -> None:
    order.pop("medicationCodeableConcept", None)
    order["medicationReference"] = {"reference": f"Medication/{MARKER}"}


def unreadable_start(order: dict[str, Any]) -> None:
    order["dosageInstruction"] = [{"timing": {"event": [MARKER]}}]


def feedback(**changes: Any) -> dict[str, Any]:
    item = {
        "card": CARD,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-01-12T10:05:31Z",
        "overrideReason": {"userComment": "seen"},
        **changes,
    }
    return {"feedback": [item]}


ECHOES = [
    ("an unknown service id in the path", CALL.replace(SELECT, MARKER), hook(), 404),
    ("a hook the service does not answer", CALL, hook(hook=MARKER), 400),
    ("a hookInstance of 129 characters", CALL, hook(hookInstance=MARKER * 8), 400),
    ("a hookInstance with a line break", CALL, hook(hookInstance=f"{MARKER}\n"), 400),
    (
        "a fhirServer that is not allow-listed",
        CALL,
        {
            **{k: v for k, v in hook().items() if k != "prefetch"},
            "fhirServer": f"https://{MARKER}.example.org/fhir",
        },
        412,
    ),
    ("a medication reference found nowhere", CALL, with_order(unidentifiable_medication), 412),
    ("a planned start that is not a date", CALL, with_order(unreadable_start), 400),
    ("feedback whose card is not a UUID", FEEDBACK, feedback(card=MARKER), 400),
    ("feedback with an unknown outcome", FEEDBACK, feedback(outcome=MARKER), 400),
    ("feedback with a timestamp that is not one", FEEDBACK, feedback(outcomeTimestamp=MARKER), 400),
    (
        "feedback with a suggestion id that is not a UUID",
        FEEDBACK,
        feedback(outcome="accepted", acceptedSuggestions=[{"id": MARKER}]),
        400,
    ),
    (
        "feedback with a comment over the limit",
        FEEDBACK,
        feedback(overrideReason={"userComment": MARKER * 600}),
        400,
    ),
    ("feedback that is a string instead of an array", FEEDBACK, {"feedback": MARKER}, 400),
    ("feedback whose item is a string", FEEDBACK, {"feedback": [MARKER]}, 400),
]


@pytest.mark.parametrize(("case", "path", "body", "status"), ECHOES, ids=[c[0] for c in ECHOES])
def test_error_bodies_do_not_repeat_what_the_sender_supplied(
    module_client: Any, case: str, path: str, body: Any, status: int
) -> None:
    """The error says what is wrong and where (JSON path), never the sender's value: it may be
    patient data, a token, or megabytes."""
    response = module_client.post(path, json=body)
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert MARKER.lower() not in response.get_data(as_text=True).lower()


def item(
    card: str = CARD,
    when: str = "2026-01-12T10:05:31Z",
    suggestions: tuple[str, ...] = (SUGGESTION,),
    comment: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "card": card,
        "outcome": "accepted",
        "outcomeTimestamp": when,
        "acceptedSuggestions": [{"id": s} for s in suggestions],
    }
    if comment is not None:
        out = {**out, "outcome": "overridden", "overrideReason": {"userComment": comment}}
        del out["acceptedSuggestions"]
    return out


SAME_ITEM = [
    ("an upper-case card uuid is the same item", [item(), item(card=CARD.upper())], 1),
    ("+00:00 instead of Z is the same item", [item(), item(when="2026-01-12T10:05:31+00:00")], 1),
    ("a lower-case z is the same item", [item(), item(when="2026-01-12t10:05:31z")], 1),
    (
        "zero fractional seconds are the same item",
        [item(), item(when="2026-01-12T10:05:31.000Z"), item(when="2026-01-12T10:05:31.0+00:00")],
        1,
    ),
    (
        ".5 and .500 are the same item",
        [item(when="2026-01-12T10:05:31.5Z"), item(when="2026-01-12T10:05:31.500Z")],
        1,
    ),
    (
        "the same instant in another offset is the same item",
        [item(), item(when="2026-01-12T11:05:31+01:00"), item(when="2026-01-12T05:05:31-05:00")],
        1,
    ),
    (
        "an upper-case suggestion id is the same item",
        [item(), item(suggestions=(SUGGESTION.upper(),))],
        1,
    ),
    (
        "suggestions in another order are the same item",
        [
            item(suggestions=(SUGGESTION, OTHER_SUGGESTION)),
            item(suggestions=(OTHER_SUGGESTION, SUGGESTION)),
        ],
        1,
    ),
    (
        "the issue's three spellings of one item are stored once",
        [item(), item(card=CARD.upper()), item(when="2026-01-12T10:05:31+00:00")],
        1,
    ),
    ("another instant is another item", [item(), item(when="2026-01-12T10:05:32Z")], 2),
    (
        "another millisecond is another item",
        [item(when="2026-01-12T10:05:31.001Z"), item(when="2026-01-12T10:05:31.002Z")],
        2,
    ),
    ("another comment is another item", [item(comment="a"), item(comment="b")], 2),
    (
        "a comment differing only in case is another item",
        [item(comment="Seen"), item(comment="seen")],
        2,
    ),
]


@pytest.mark.parametrize(("case", "posts", "stored"), SAME_ITEM, ids=[c[0] for c in SAME_ITEM])
def test_feedback_is_de_duplicated_on_canonical_values(
    url: str, database: Database, case: str, posts: list[dict[str, Any]], stored: int
) -> None:
    """Each spelling posted separately, as an EHR retrying would: one row per distinct item."""
    now = datetime(2026, 1, 12, 10, 6, tzinfo=UTC)
    for post in posts:
        store_feedback(database, SELECT, validate_feedback(SELECT, {"feedback": [post]}), now)
    assert count(url, "feedback") == stored


def test_the_service_stores_the_canonical_values(url: str) -> None:
    """Through the HTTP API: the three spellings are one row, holding the lower-case uuid and the
    UTC instant."""
    app = create_app(testing=True, database_url=url)
    client = app.test_client()
    for post in (item(), item(card=CARD.upper()), item(when="2026-01-12T11:05:31+01:00")):
        response = client.post(FEEDBACK, json={"feedback": [copy.deepcopy(post)]})
        assert (response.status_code, response.get_json()) == (200, {})
    assert (
        count(
            url,
            "feedback",
            f"WHERE card_uuid = '{CARD}' AND outcome_timestamp = '2026-01-12T10:05:31Z'",
        )
        == 1
    )
    assert count(url, "feedback") == 1
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()
