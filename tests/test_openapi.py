"""openapi.yaml: a valid OpenAPI 3.1 document that matches the app's routes, and a contract check
(tests/conftest.py) that really refuses responses breaking it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from conftest import OPENAPI, contract
from flask import Flask, Response
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from werkzeug.test import Client, TestResponse

GOOD_CARD: dict[str, Any] = {
    "uuid": "1b5ba8e4-7f5e-4f1e-9d0e-3f1c2a4b5c6d",
    "summary": "Lemtrada eligibility: 1 warning of 8 checks; see checklist",
    "indicator": "warning",
    "source": {"label": "LEMTRADA REMS"},
}


def test_the_document_is_valid_openapi_3_1() -> None:
    """openapi-spec-validator accepts openapi.yaml as an OpenAPI 3.1 document."""
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_the_app_serves_is_documented_and_nothing_more(app: Flask) -> None:
    """Each Flask route (path and method) is an operation in openapi.yaml, and vice versa."""

    def as_template(rule: str) -> str:
        return rule.replace("<service_id>", "{id}")

    served = {
        (as_template(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or ())
        if method != "HEAD"
    }
    paths = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))["paths"]
    documented = {
        (path, method.upper())
        for path, item in paths.items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch", "options")
    }
    assert served == documented


def card_response(**changes: Any) -> dict[str, Any]:
    card = {**GOOD_CARD, **changes}
    return {"cards": [{k: v for k, v in card.items() if v is not ...}]}


SUGGESTION = {
    "label": "Order VZV IgG",
    "uuid": "2b5ba8e4-7f5e-4f1e-9d0e-3f1c2a4b5c6d",
    "actions": [
        {
            "type": "create",
            "description": "Order VZV IgG",
            "resource": {"resourceType": "ServiceRequest"},
        }
    ],
}

# name -> (method, path, status, content type, body, a phrase the refusal must contain)
BROKEN = {
    "a card summary of 140 characters": (
        "POST",
        "/cds-services/lemtrada-order-select",
        200,
        "application/json",
        card_response(summary="x" * 140),
        "is too long",
    ),
    "an indicator outside info, warning and critical": (
        "POST",
        "/cds-services/lemtrada-order-select",
        200,
        "application/json",
        card_response(indicator="hard-stop"),
        "is not one of",
    ),
    "suggestions without selectionBehavior": (
        "POST",
        "/cds-services/lemtrada-order-select",
        200,
        "application/json",
        card_response(suggestions=[SUGGESTION]),
        "selectionBehavior",
    ),
    "an override reason without display": (
        "POST",
        "/cds-services/lemtrada-order-select",
        200,
        "application/json",
        card_response(overrideReasons=[{"system": "http://x", "code": "need-more-info"}]),
        "display",
    ),
    "a null optional field": (
        "POST",
        "/cds-services/lemtrada-order-select",
        200,
        "application/json",
        card_response(detail=None),
        "None is not of type",
    ),
    "a card uuid that is not a uuid": (
        "POST",
        "/cds-services/lemtrada-order-select",
        200,
        "application/json",
        card_response(uuid="card-1"),
        "is not a 'uuid'",
    ),
    "an appContext on an absolute link": (
        "POST",
        "/cds-services/lemtrada-order-select",
        200,
        "application/json",
        card_response(
            links=[
                {"label": "x", "url": "https://x.example", "type": "absolute", "appContext": "y"}
            ]
        ),
        "should not be valid",
    ),
    "an HTML error page": (
        "POST",
        "/cds-services/lemtrada-order-select",
        500,
        "text/html",
        "<h1>Oops</h1>",
        "content type",
    ),
    "an undocumented status": (
        "GET",
        "/cds-services",
        418,
        "application/json",
        {},
        "status 418 is not documented",
    ),
    "an error that is not an OperationOutcome": (
        "POST",
        "/cds-services/lemtrada-order-select",
        400,
        "application/json",
        {"error": "bad"},
        "'resourceType' is a required property",
    ),
    "a success on a path the document does not have": (
        "GET",
        "/admin",
        200,
        "application/json",
        {},
        "is not documented",
    ),
    "a preflight answered 200 instead of 204": (
        "OPTIONS",
        "/cds-services",
        200,
        "application/json",
        {},
        "status 200 is not documented",
    ),
    "a discovery entry without its id": (
        "GET",
        "/cds-services",
        200,
        "application/json",
        {"services": [{"hook": "order-select", "description": "d"}]},
        "'id' is a required",
    ),
}


def canned(status: int, content_type: str, body: Any) -> TestResponse:
    """A response from a throw-away app (plain werkzeug client: not checked on the way)."""
    stub = Flask("stub")
    data = body.encode() if isinstance(body, str) else orjson.dumps(body)

    @stub.route("/", defaults={"path": ""}, methods=["GET", "POST", "OPTIONS"])
    @stub.route("/<path:path>", methods=["GET", "POST", "OPTIONS"])
    def anything(path: str) -> Response:
        return Response(data, status=status, content_type=content_type)

    return Client(stub, TestResponse).get("/")


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_contract_check_refuses(name: str) -> None:
    """Each broken response is refused, and the refusal says what is wrong."""
    method, path, status, content_type, body, phrase = BROKEN[name]
    problems = contract().problems(method, path, canned(status, content_type, body))
    assert any(phrase in p for p in problems), problems


def test_the_contract_check_accepts_a_conforming_card_response() -> None:
    """A minimal valid card response passes (so the refusals above are about their one flaw)."""
    response = canned(
        200,
        "application/json",
        card_response(
            suggestions=[SUGGESTION],
            selectionBehavior="any",
            overrideReasons=[
                {"system": "http://x", "code": "need-more-info", "display": "Need info"}
            ],
        ),
    )
    assert contract().problems("POST", "/cds-services/lemtrada-order-select", response) == []


def test_every_test_client_response_in_the_suite_is_checked(tmp_path: Path) -> None:
    """The session hook wraps FlaskClient: a non-conforming answer fails the test that got it."""
    stub = Flask("stub")
    stub.add_url_rule("/cds-services", "d", lambda: Response("<p>hi</p>", content_type="text/html"))
    client: FlaskClient = stub.test_client()
    with pytest.raises(AssertionError, match="breaks openapi.yaml"):
        client.get("/cds-services")
