"""Shared fixtures, and the OpenAPI contract check on every response the suite receives.

Every request made through Flask's test client (`app.test_client()`, any test) has its response
checked against `openapi.yaml`: the path, method and status must be documented, the content type
must be one the document lists, and the JSON body must validate (Draft 2020-12, formats checked)
against the documented schema. A path that does not exist may answer only 404 (or 401 when
authentication runs first), and a documented path may refuse an undocumented method only with 405
(carrying an `Allow` header); both with an OperationOutcome. A violation fails the test that
received the response.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
import yaml
from fhir_stub_server import FhirStub
from flask import Flask
from flask.testing import FlaskClient
from golden_responses import TODAY, render
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from cds_service.app import create_app

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "openapi.yaml"
DOC_URI = "urn:cds-service:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class DocumentedResponse:
    """One documented (operation, status): its content types with validators, and its headers."""

    content: dict[str, Draft202012Validator | None]
    headers: dict[str, Draft202012Validator]


@dataclass(frozen=True)
class PathItem:
    template: str
    pattern: re.Pattern[str]
    operations: dict[str, dict[str, DocumentedResponse]]  # method -> status -> response


class Contract:
    """openapi.yaml compiled once: path regexes and one validator per referenced schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(
            DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
        )
        self._validators: dict[str, Draft202012Validator] = {}
        self.paths = [self._path_item(t, item) for t, item in document["paths"].items()]
        self.outcome = self._validator({"$ref": "#/components/schemas/OperationOutcome"})

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        if key not in self._validators:
            rooted = (
                {"$ref": DOC_URI + schema["$ref"]}
                if set(schema) == {"$ref"}
                else {"$id": DOC_URI + "#inline", **schema}
            )
            self._validators[key] = Draft202012Validator(
                rooted, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
        return self._validators[key]

    def _path_item(self, template: str, item: dict[str, Any]) -> PathItem:
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
        operations: dict[str, dict[str, DocumentedResponse]] = {}
        for method in METHODS:
            if method not in item:
                continue
            responses: dict[str, DocumentedResponse] = {}
            for status, response in item[method]["responses"].items():
                response = self._resolve(response)
                content = {
                    media: (self._validator(spec["schema"]) if "schema" in spec else None)
                    for media, spec in response.get("content", {}).items()
                }
                headers = {
                    name.lower(): self._validator(self._resolve(h)["schema"])
                    for name, h in response.get("headers", {}).items()
                }
                responses[str(status)] = DocumentedResponse(content, headers)
            operations[method.upper()] = responses
        return PathItem(template, pattern, operations)

    def problems(self, method: str, path: str, response: TestResponse) -> list[str]:
        """Everything in `response` that the document does not allow (empty when it conforms)."""
        status = str(response.status_code)
        item = next((p for p in self.paths if p.pattern.match(path)), None)
        if item is None:
            if status not in ("401", "404"):
                return [f"{path} is not documented, so it may only answer 404 (got {status})"]
            return self._outcome_problems(response)
        operation = item.operations.get("GET" if method == "HEAD" else method)
        if operation is None:
            if status not in ("401", "405"):
                return [
                    f"{method} {item.template} is not documented, so it may only answer 405 "
                    f"(got {status})"
                ]
            return self._allow_problems(response) + self._outcome_problems(response)
        documented = (
            operation.get(status) or operation.get(f"{status[0]}XX") or operation.get("default")
        )
        if documented is None:
            return [
                f"status {status} is not documented for {method} {item.template} "
                f"(documented: {', '.join(operation)})"
            ]
        out = [
            f"header {name}: {error.message}"
            for name, validator in documented.headers.items()
            if name in response.headers
            for error in validator.iter_errors(response.headers[name])
        ]
        data = response.get_data()
        if not documented.content:
            if data:
                out.append(f"{status} is documented without a body but has {len(data)} bytes")
            return out
        if response.mimetype not in documented.content:
            return out + [
                f"content type {response.content_type!r} is not documented for "
                f"{status} (documented: {', '.join(documented.content)})"
            ]
        validator = documented.content[response.mimetype]
        if method == "HEAD" or validator is None:
            return out
        if response.mimetype.startswith("text/"):  # e.g. /metrics: the text itself is validated
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return out + ["the text body is not UTF-8"]
            return out + [error.message for error in validator.iter_errors(text)]
        return out + self._body_problems(validator, data)

    def _allow_problems(self, response: TestResponse) -> list[str]:
        """A 405 names the methods the path supports (components/headers/Allow)."""
        if response.status_code != 405:
            return []
        schema = self.document["components"]["headers"]["Allow"]["schema"]
        if "Allow" not in response.headers:
            return ["a 405 without an Allow header"]
        return [
            f"header Allow: {error.message}"
            for error in self._validator(schema).iter_errors(response.headers["Allow"])
        ]

    def _outcome_problems(self, response: TestResponse) -> list[str]:
        if response.mimetype != "application/json":
            return [f"errors are OperationOutcome JSON, got {response.content_type!r}"]
        return self._body_problems(self.outcome, response.get_data())

    @staticmethod
    def _body_problems(validator: Draft202012Validator, data: bytes) -> list[str]:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return ["the body is not valid JSON"]
        return [
            f"{error.json_path}: {error.message[:300]}"
            for error in sorted(validator.iter_errors(body), key=lambda e: e.json_path)[:10]
        ]


@cache
def contract() -> Contract:
    """openapi.yaml, parsed and compiled once per session."""
    return Contract(yaml.safe_load(OPENAPI.read_text(encoding="utf-8")))


def check_response(response: TestResponse) -> None:
    """Fail with a readable message when a test-client response breaks the contract."""
    request = response.request
    problems = contract().problems(request.method, request.path, response)
    if problems:
        raise AssertionError(
            f"response to {request.method} {request.path} ({response.status_code}) breaks "
            "openapi.yaml:\n  " + "\n  ".join(problems)
        )


WHOLE_MODULE_SLOW = "\npytestmark = pytest.mark.slow\n"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m "not slow"` (make test-fast), a test module marked slow as a whole is not even
    imported: Chromium's driver, hypothesis strategies and schemathesis cost seconds to import."""
    if (
        config.getoption("markexpr") == "not slow"
        and collection_path.suffix == ".py"
        and collection_path.name.startswith("test_")
        and WHOLE_MODULE_SLOW in collection_path.read_text(encoding="utf-8")
    ):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A browser or PostgreSQL test is also slow, so `make test-fast` (-m "not slow") leaves it
    out without each test repeating both markers."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def openapi_contract_on_every_response() -> Iterator[None]:
    """Wrap FlaskClient.open for the whole session so every test's responses are checked."""
    original = FlaskClient.open

    def open_and_check(self: FlaskClient, *args: Any, **kwargs: Any) -> TestResponse:
        response = original(self, *args, **kwargs)
        check_response(response)
        return response

    FlaskClient.open = open_and_check  # type: ignore[method-assign]
    try:
        yield
    finally:
        FlaskClient.open = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def state_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Anything falling back to the default state folder (the default database) writes under the
    test run's temporary folder, never into the user's own state folder or the checkout;
    subprocesses inherit it. Tests of the defaults themselves clear CDS_STATE_DIR."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDS_STATE_DIR", str(tmp_path_factory.mktemp("cds-state")))
        yield


@pytest.fixture()
def database_url(tmp_path: Path) -> str:
    """A SQLite database of the test's own."""
    return f"sqlite:///{tmp_path}/db.sqlite3"


@pytest.fixture()
def app(database_url: str) -> Iterator[Flask]:
    """An unauthenticated app with its own SQLite database."""
    app = create_app(testing=True, database_url=database_url)
    yield app
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    """Flask test client of an unauthenticated app with its own SQLite database."""
    return app.test_client()


@pytest.fixture(scope="module")
def module_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """One test client for a whole module (tests that only read answers), with its own SQLite
    database."""
    folder = tmp_path_factory.mktemp("module-db")
    app = create_app(testing=True, database_url=f"sqlite:///{folder}/db.sqlite3")
    yield app.test_client()
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


class FrozenAnswers:
    """Each request fixture's answer under a hook, on the golden files' date (an order without a
    start date starts 'today'), posted once per session: the golden files and the clinical table
    are two checks of the same answers."""

    def __init__(self) -> None:
        self.app = create_app(testing=True)
        self.client = self.app.test_client()
        self._answers: dict[tuple[str, str], bytes] = {}

    def __call__(self, name: str, hook: str) -> bytes:
        """The answer as golden_responses.render writes it: {"status": ..., "body": ...}."""
        if (name, hook) not in self._answers:
            with mock.patch("cds_service.http_api.today", return_value=TODAY):
                self._answers[name, hook] = render(self.client, name, hook)
        return self._answers[name, hook]


@pytest.fixture(scope="session")
def frozen_answer() -> Iterator[FrozenAnswers]:
    """The answer of a request fixture under a hook on the golden files' date."""
    answers = FrozenAnswers()
    yield answers
    answers.app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    answers.app.extensions["cds_db"].dispose()


@pytest.fixture()
def stubs() -> Iterator[Callable[..., FhirStub]]:
    """Start FHIR stubs on 127.0.0.1; every one is stopped at teardown."""
    started: list[FhirStub] = []

    def start(request_json: dict[str, Any], **options: Any) -> FhirStub:
        stub = FhirStub(request_json, **options)
        stub.start()
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.stop()
