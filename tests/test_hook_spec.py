"""The service's request reader and `cds-service validate` give the same verdict on every field.

Both read cds_service/hook_spec.FIELDS. For each row and each hook it applies to, a clean request
is broken one way (the field missing, null, or of another JSON type) and handed to both: the
reader refuses it (BadRequest, a 400) exactly when validate reports an error, both name the
field's path, and both match what the row declares (missing: refused iff required; wrong type:
always refused). Before hook_spec they disagreed on a missing `context.userId` (validate: error,
service: accepted) and on `fhirAuthorization` without its required members.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixture_requests import fixture_request

from cds_service.conformance import validate_request
from cds_service.errors import BadRequest
from cds_service.hook_request import read_hook_request
from cds_service.hook_spec import FIELDS, HOOKS, Field, JsonType

CLEAN = {
    "order-select": "eligible_patient_at_order_select",
    "order-sign": "eligible_patient_at_order_sign",
    "patient-view": "monitoring/treated_patient_with_monitoring_on_time_gets_one_info_summary",
}
AUTHORIZATION = {
    "access_token": "abc",
    "token_type": "Bearer",
    "expires_in": 300,
    "scope": "patient/*.read",
    "subject": "cds-service",
    "patient": "p1",
}
WRONG_TYPE: dict[JsonType, Any] = {
    "string": 12345,
    "object": ["not", "an", "object"],
    "array": "MedicationRequest/1",
    "integer": "300",
}


def clean_request(hook: str) -> dict[str, Any]:
    """A fixture both readers accept, with every optional member present (so each can break)."""
    doc = copy.deepcopy(fixture_request(CLEAN[hook]))
    assert doc["hook"] == hook
    doc["context"]["encounterId"] = "enc-1"
    doc["fhirServer"] = "https://ehr.example.org/fhir"
    doc["fhirAuthorization"] = dict(AUTHORIZATION)
    return doc


@dataclass(frozen=True)
class Verdict:
    refused: bool
    """The reader raised BadRequest (the service answers 400) / validate reported an error."""
    paths: frozenset[str]
    """The JSON paths named (the reader names one; validate every error's)."""


def reader_verdict(doc: dict[str, Any], hook: str) -> Verdict:
    try:
        read_hook_request(doc, hook)
    except BadRequest as exc:
        return Verdict(True, frozenset(f"$.{p}" for p in exc.expression or ["?"]))
    return Verdict(False, frozenset())


def validate_verdict(doc: dict[str, Any]) -> Verdict:
    errors = [p for p in validate_request(doc) if p.level == "error"]
    return Verdict(bool(errors), frozenset(p.path for p in errors))


def _holder(doc: dict[str, Any], field: Field) -> dict[str, Any]:
    holder = doc
    for key in filter(None, field.parent.split(".")):
        holder = holder[key]
    return holder


def _missing(field: Field) -> Callable[[dict[str, Any]], None]:
    return lambda doc: _holder(doc, field).pop(field.name)


def _null(field: Field) -> Callable[[dict[str, Any]], None]:
    return lambda doc: _holder(doc, field).__setitem__(field.name, None)


def _mistyped(field: Field) -> Callable[[dict[str, Any]], None]:
    return lambda doc: _holder(doc, field).__setitem__(field.name, WRONG_TYPE[field.json_type])


def _mistyped_item(field: Field) -> Callable[[dict[str, Any]], None]:
    items = field.items
    assert items is not None
    return lambda doc: _holder(doc, field)[field.name].append(WRONG_TYPE[items])


def _expect_refused_when_missing(field: Field, doc_has_dependant: bool) -> bool:
    return field.refused_when_missing or (field.required_with is not None and doc_has_dependant)


def cases() -> list[Any]:
    """(hook, break the request, refused?, path named) for every row, hook and way of breaking."""
    out: list[Any] = []
    for field in FIELDS:
        for hook in HOOKS:
            if not field.applies_to(hook):
                continue
            # In the clean request every required_with member (fhirAuthorization) is present.
            refused = _expect_refused_when_missing(field, doc_has_dependant=True)
            verb = "refused" if refused else "accepted"
            out.append(
                pytest.param(
                    hook,
                    _missing(field),
                    refused,
                    field.path,
                    id=f"{hook}: {field.path} missing is {verb}",
                )
            )
            out.append(
                pytest.param(
                    hook,
                    _null(field),
                    refused,
                    field.path,
                    id=f"{hook}: {field.path} null is {verb}",
                )
            )
            out.append(
                pytest.param(
                    hook,
                    _mistyped(field),
                    True,
                    field.path,
                    id=f"{hook}: {field.path} not of type {field.json_type} is refused",
                )
            )
            if field.items is not None:
                out.append(
                    pytest.param(
                        hook,
                        _mistyped_item(field),
                        True,
                        field.path,
                        id=f"{hook}: an entry of {field.path} not of type {field.items} is refused",
                    )
                )
    return out


@pytest.mark.parametrize(("hook", "breaks", "refused", "path"), cases())
def test_reader_and_validate_agree_on_each_field(
    hook: str, breaks: Callable[[dict[str, Any]], None], refused: bool, path: str
) -> None:
    """Each broken field: the service refuses it (400) exactly when validate calls it an error,
    as the spec row says, and both name the field."""
    doc = clean_request(hook)
    breaks(doc)
    by_reader, by_validate = reader_verdict(doc, hook), validate_verdict(doc)
    assert (by_reader.refused, by_validate.refused) == (refused, refused), (by_reader, by_validate)
    if refused:
        assert by_reader.paths == {f"$.{path}"}
        assert any(p == f"$.{path}" or p.startswith(f"$.{path}[") for p in by_validate.paths), (
            by_validate.paths
        )


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.__setitem__(key, value)


def _context(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["context"].__setitem__(key, value)


# Beyond presence and type: the rows the table cannot express as (missing, wrong type).
OTHER_CASES = [
    pytest.param(
        "order-select",
        _set("hookInstance", "a" * 129),
        True,
        id="a hookInstance longer than 128 characters is refused by both",
    ),
    pytest.param(
        "order-select",
        _set("hookInstance", "abc\n1"),
        True,
        id="a hookInstance outside printable ASCII is refused by both",
    ),
    pytest.param(
        "order-select",
        _set("hookInstance", "abc-1"),
        False,
        id="a short hookInstance that is not a UUID is accepted by both",
    ),
    pytest.param(
        "order-select",
        _set("hook", "encounter-start"),
        True,
        id="a hook this service does not answer is refused by both",
    ),
    pytest.param(
        "patient-view",
        _context("draftOrders", {"resourceType": "Bundle", "type": "collection", "entry": []}),
        False,
        id="patient-view ignores draftOrders: they are not part of its context",
    ),
    pytest.param(
        "order-sign",
        _context("selections", "MedicationRequest/1"),
        False,
        id="order-sign ignores selections: they are not part of its context",
    ),
    pytest.param(
        "order-select",
        _context("appointments", 12),
        False,
        id="an unknown context field is tolerated by both",
    ),
    pytest.param(
        "order-select",
        lambda doc: doc["fhirAuthorization"].__setitem__("expires_in", True),
        True,
        id="a boolean expires_in is not an integer for either",
    ),
]


@pytest.mark.parametrize(("hook", "breaks", "refused"), OTHER_CASES)
def test_reader_and_validate_agree_beyond_the_table(
    hook: str, breaks: Callable[[dict[str, Any]], None], refused: bool
) -> None:
    """hookInstance bounds, the hook's name and fields outside the spec get one verdict too."""
    doc = clean_request(hook)
    breaks(doc)
    by_reader, by_validate = reader_verdict(doc, hook), validate_verdict(doc)
    assert (by_reader.refused, by_validate.refused) == (refused, refused), (by_reader, by_validate)


@pytest.mark.parametrize("hook", HOOKS)
def test_clean_requests_are_accepted_by_both(hook: str) -> None:
    """The starting point of every case above: without it a case could pass for another reason."""
    doc = clean_request(hook)
    assert reader_verdict(doc, hook) == validate_verdict(doc) == Verdict(False, frozenset())


def test_user_id_is_required_in_every_hook_but_its_absence_costs_no_cards() -> None:
    """CDS Hooks' order-select, order-sign and patient-view list userId as REQUIRED; the table
    says so, and tolerates its absence (the service never reads it): validate warns, the service
    answers."""
    user = next(f for f in FIELDS if f.path == "context.userId")
    assert user.required and user.tolerated and user.json_type == "string"
    assert all(user.applies_to(hook) for hook in HOOKS)
    for hook in HOOKS:
        doc = clean_request(hook)
        del doc["context"]["userId"]
        assert reader_verdict(doc, hook) == validate_verdict(doc) == Verdict(False, frozenset())
        assert any(
            p.level == "warning" and p.path == "$.context.userId" for p in validate_request(doc)
        ), validate_request(doc)


def _doc_row(field: Field) -> str:
    kind = f"array of {field.items}s" if field.items else field.json_type
    if field.required_with is not None:
        required = f"when `{field.required_with}` is present"
    else:
        required = (
            "yes (missing: a warning; the service answers)"
            if field.tolerated
            else "yes"
            if field.required
            else "no"
        )
    hooks = (
        "every request" if field.hooks is None else ", ".join(h for h in HOOKS if h in field.hooks)
    )
    return f"| `{field.path}` | {kind} | {required} | {hooks} |"


def _names_hooks(cell: str) -> bool:
    """A Hooks cell of the table: every request, or some of HOOKS joined with ', '."""
    return cell == "every request" or set(cell.split(", ")) <= set(HOOKS)


def test_docs_conformance_lists_the_table_as_it_is() -> None:
    """docs/conformance.md shows FIELDS row by row: what an implementer reads is what is used."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "conformance.md").read_text("utf-8")
    rows = [
        line
        for line in doc.splitlines()
        if line.startswith("| `")
        and "` | " in line
        and _names_hooks(line.split(" | ")[-1].rstrip(" |"))
    ]
    assert rows == [_doc_row(f) for f in FIELDS]
