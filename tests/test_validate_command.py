"""`cds-service validate REQUEST.json`: every problem of a hook request, one line each, with path.

Decision (documented in docs/conformance.md): what the service reads leniently (the Epic-style
MedicationRequest without `intent`, a draftOrders Bundle without `type`, ids over 64 characters)
is a WARNING, not an error; resources that fail the R4B models are errors.
"""

from __future__ import annotations

import copy
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fixture_requests import fixture_request as _fixture

from cds_service.conformance import Problem, validate_request

ROOT = pathlib.Path(__file__).resolve().parents[1]
REQUESTS = ROOT / "fhir_fixtures" / "requests"
FIXTURES = sorted(p.stem for p in REQUESTS.glob("*.json"))
MONITORING_FIXTURES = sorted(
    f"monitoring/{p.stem}" for p in (REQUESTS / "monitoring").glob("*.json")
)

# Fixtures that are broken on purpose -> the exact (level, path) of their errors.
DELIBERATELY_BROKEN: dict[str, set[tuple[str, str]]] = {
    # status is the number 12345 and valueCodeableConcept a bare string.
    "unreadable_hiv_result": {("error", "$.prefetch.observations.entry[32].resource")},
}
# Fixtures whose lenient parts must show up as warnings (and not as errors).
EXPECTED_WARNINGS: dict[str, set[str]] = {
    "lemtrada_by_medication_reference": {
        "$.context.draftOrders.type",
        "$.context.draftOrders.entry[0].resource.intent",
        "$.context.draftOrders.entry[0].resource.id",
    },
    "prefetch_keys_omitted": {"$.prefetch.observations", "$.prefetch.conditions"},
}


def _errors(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.level, p.path) for p in problems if p.level == "error"}


@pytest.mark.parametrize("name", FIXTURES)
def test_every_request_fixture_has_no_errors_unless_broken_on_purpose(name: str) -> None:
    """Every committed request validates without errors, except the deliberately broken ones."""
    problems = validate_request(_fixture(name))
    assert _errors(problems) == DELIBERATELY_BROKEN.get(name, set()), [p.line() for p in problems]
    warned = {p.path for p in problems if p.level == "warning"}
    assert EXPECTED_WARNINGS.get(name, set()) <= warned


@pytest.mark.parametrize("name", MONITORING_FIXTURES)
def test_every_patient_view_fixture_validates_clean(name: str) -> None:
    """The monitoring service's patient-view requests (userId, patientId, no draft orders, the
    monitoring prefetch) are accepted as they are: no error and no warning."""
    assert [p.line() for p in validate_request(_fixture(name))] == []


def test_patient_view_without_its_monitoring_prefetch_warns_of_the_412() -> None:
    """A patient-view request missing a monitoring key (the pending orders) and without a
    fhirServer: validate warns that the service will answer 412, whoever the patient is."""
    doc = _fixture(MONITORING_FIXTURES[0])
    del doc["prefetch"]["serviceRequests"]
    assert [p.line() for p in validate_request(doc)] == [
        "warning: $.prefetch.serviceRequests: missing and no fhirServer: the service will "
        "answer 412 for any patient"
    ]


def test_epic_style_order_without_intent_is_a_warning_not_an_error() -> None:
    """The Epic-style draft order without `intent` is read leniently, so it is only a warning."""
    problems = validate_request(_fixture("lemtrada_by_medication_reference"))
    intent = [p for p in problems if p.path.endswith("entry[0].resource.intent")]
    assert [p.level for p in intent] == ["warning"]
    assert "read as 'order'" in intent[0].message


def _base() -> dict[str, Any]:
    return copy.deepcopy(_fixture("eligible_patient_at_order_select"))


def _sign() -> dict[str, Any]:
    return copy.deepcopy(_fixture("eligible_patient_at_order_sign"))


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _delete(doc: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    target = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc


def _with_server(doc: dict[str, Any], **auth: Any) -> dict[str, Any]:
    doc["fhirServer"] = "https://ehr.example.org/fhir"
    doc["fhirAuthorization"] = {
        "access_token": "abc",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Patient.read",
        "subject": "cds-service",
        **auth,
    }
    return doc


def _observation(doc: dict[str, Any], index: int) -> dict[str, Any]:
    resource: dict[str, Any] = doc["prefetch"]["observations"]["entry"][index]["resource"]
    return resource


def _lemtrada(doc: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = doc["context"]["draftOrders"]["entry"][0]["resource"]
    return resource


def _edit(
    doc: dict[str, Any],
    find: Callable[[dict[str, Any], int], dict[str, Any]],
    index: int,
    **fields: Any,
) -> dict[str, Any]:
    """The request with some fields of one of its resources replaced."""
    find(doc, index).update(fields)
    return doc


# name -> (build the broken request, level, path, part of the message)
BROKEN: list[tuple[str, Callable[[], Any], str, str, str]] = [
    ("a JSON array is not a request", lambda: [], "error", "$", "must be a JSON object"),
    ("a request without hook", lambda: _delete(_base(), ("hook",)), "error", "$.hook", "required"),
    (
        "a hook this service does not answer",
        lambda: _set(_base(), ("hook",), "encounter-start"),
        "error",
        "$.hook",
        "not 'encounter-start'",
    ),
    (
        "a short hookInstance that is not a UUID is accepted with a warning",
        lambda: _set(_base(), ("hookInstance",), "abc-1"),
        "warning",
        "$.hookInstance",
        "not a UUID",
    ),
    (
        "a hookInstance longer than 128 characters is refused as the service does",
        lambda: _set(_base(), ("hookInstance",), "a" * 129),
        "error",
        "$.hookInstance",
        "longer than 128 characters",
    ),
    (
        "a hookInstance with a line break is refused as the service does",
        lambda: _set(_base(), ("hookInstance",), "abc\n1"),
        "error",
        "$.hookInstance",
        "outside printable ASCII",
    ),
    (
        "a request without context",
        lambda: _delete(_base(), ("context",)),
        "error",
        "$.context",
        "required",
    ),
    (
        "order-select without selections",
        lambda: _delete(_base(), ("context", "selections")),
        "error",
        "$.context.selections",
        "required for the order-select hook",
    ),
    (
        "order-select without userId (the service answers without it)",
        lambda: _delete(_base(), ("context", "userId")),
        "warning",
        "$.context.userId",
        "required",
    ),
    (
        "order-sign without draftOrders",
        lambda: _delete(_sign(), ("context", "draftOrders")),
        "error",
        "$.context.draftOrders",
        "required for the order-sign hook",
    ),
    (
        "order-sign without patientId",
        lambda: _delete(_sign(), ("context", "patientId")),
        "error",
        "$.context.patientId",
        "required",
    ),
    (
        "a userId that is a Patient",
        lambda: _set(_base(), ("context", "userId"), "Patient/1"),
        "error",
        "$.context.userId",
        "'Practitioner/id' or 'PractitionerRole/id'",
    ),
    (
        "a patientId given as a reference",
        lambda: _set(_base(), ("context", "patientId"), "Patient/123"),
        "error",
        "$.context.patientId",
        "not a reference",
    ),
    (
        "a selection that is not a Type/id reference",
        lambda: _set(_base(), ("context", "selections"), ["lemtrada-first-course"]),
        "error",
        "$.context.selections[0]",
        "not a 'Type/id' reference",
    ),
    (
        "a selection that is not among the draft orders",
        lambda: _set(
            _base(), ("context", "selections"), ["MedicationRequest/x", "MedicationRequest/y"]
        ),
        "error",
        "$.context.selections[1]",
        "is not an entry of context.draftOrders",
    ),
    (
        "draftOrders that is a bare resource, not a Bundle",
        lambda: _set(_base(), ("context", "draftOrders"), {"resourceType": "MedicationRequest"}),
        "error",
        "$.context.draftOrders",
        "must be a FHIR Bundle",
    ),
    (
        "a draft order with an invalid status",
        lambda: _set(_base(), ("context", "draftOrders", "entry", 0, "resource", "status"), 7),
        "error",
        "$.context.draftOrders.entry[0].resource",
        "not a valid FHIR R4 resource: status",
    ),
    (
        "fhirAuthorization without fhirServer",
        lambda: _delete(_with_server(_base()), ("fhirServer",)),
        "error",
        "$.fhirServer",
        "required when fhirAuthorization is present",
    ),
    (
        "fhirAuthorization without access_token",
        lambda: _delete(_with_server(_base()), ("fhirAuthorization", "access_token")),
        "error",
        "$.fhirAuthorization.access_token",
        "required",
    ),
    (
        "fhirAuthorization with a token type other than Bearer",
        lambda: _with_server(_base(), token_type="MAC"),
        "error",
        "$.fhirAuthorization.token_type",
        "must be 'Bearer'",
    ),
    (
        "fhirAuthorization whose expires_in is a string",
        lambda: _with_server(_base(), expires_in="300"),
        "error",
        "$.fhirAuthorization.expires_in",
        "must be an integer",
    ),
    (
        "fhirAuthorization without subject (the service answers without it)",
        lambda: _delete(_with_server(_base()), ("fhirAuthorization", "subject")),
        "warning",
        "$.fhirAuthorization.subject",
        "required",
    ),
    (
        "a prefetch value that is a string",
        lambda: _set(_base(), ("prefetch", "patient"), "Patient/123"),
        "error",
        "$.prefetch.patient",
        "not a Bundle, a resource, null or an OperationOutcome",
    ),
    (
        "a prefetch value without resourceType",
        lambda: _set(_base(), ("prefetch", "conditions"), {"entry": []}),
        "error",
        "$.prefetch.conditions",
        "not a Bundle, a resource, null or an OperationOutcome",
    ),
    (
        "a prefetched Observation that fails the R4B models",
        lambda: _edit(_base(), _observation, 3, effectiveDateTime="last Tuesday"),
        "error",
        "$.prefetch.observations.entry[3].resource",
        "not a valid FHIR R4 resource",
    ),
    (
        "a prefetched resource of an unknown type",
        lambda: _set(_base(), ("prefetch", "patient"), {"resourceType": "Patent"}),
        "error",
        "$.prefetch.patient",
        "unknown resourceType 'Patent'",
    ),
    (
        "an Observation coded in a local system only",
        lambda: _edit(
            _base(), _observation, 3, code={"coding": [{"system": "urn:oid:1.2.3", "code": "HIV"}]}
        ),
        "warning",
        "$.prefetch.observations.entry[3].resource.code.coding[0].system",
        "not a code system the checks read",
    ),
    (
        "a draft order coding without a system",
        lambda: _edit(
            _base(),
            lambda d, _: _lemtrada(d),
            0,
            medicationCodeableConcept={"coding": [{"code": "1594660"}]},
        ),
        "warning",
        "$.context.draftOrders.entry[0].resource.medicationCodeableConcept.coding[0]",
        "coding without a system",
    ),
    (
        "a prefetch OperationOutcome without a fhirServer",
        lambda: _set(
            _base(),
            ("prefetch", "immunizations"),
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "forbidden"}],
            },
        ),
        "warning",
        "$.prefetch.immunizations",
        "will answer 412",
    ),
    (
        "a prefetch key the service does not declare",
        lambda: _set(_base(), ("prefetch", "encounters"), None),
        "warning",
        "$.prefetch.encounters",
        "not a prefetch key of this service",
    ),
    (
        "a plain-http fhirServer",
        lambda: _set(_with_server(_base()), ("fhirServer",), "http://ehr.example.org/fhir"),
        "warning",
        "$.fhirServer",
        "plain http",
    ),
]


@pytest.mark.parametrize(
    ("name", "build", "level", "path", "message"), BROKEN, ids=[row[0] for row in BROKEN]
)
def test_broken_request_reports_the_problem_at_its_path(
    name: str, build: Callable[[], Any], level: str, path: str, message: str
) -> None:
    """Each broken request yields the expected level and message at the expected JSON path."""
    problems = validate_request(build())
    matching = [p for p in problems if p.path == path and p.level == level]
    assert matching, f"{name}: nothing at {path}: {[p.line() for p in problems]}"
    assert any(message in p.message for p in matching), [p.line() for p in matching]
    if level == "warning":
        assert not _errors(problems), [p.line() for p in problems]


def test_every_problem_is_reported_not_just_the_first() -> None:
    """A request with several independent problems reports each of them."""
    doc = _base()
    doc["hookInstance"] = "n" * 129
    doc["context"]["userId"] = "Device/1"
    doc["context"]["selections"] = ["bad"]
    paths = {p.path for p in validate_request(doc) if p.level == "error"}
    assert paths == {"$.hookInstance", "$.context.userId", "$.context.selections[0]"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "validate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_exits_0_and_prints_the_count_for_a_valid_request() -> None:
    """A clean fixture exits 0 and ends with a count line."""
    result = _cli(str(REQUESTS / "eligible_patient_at_order_sign.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(": 0 errors, 0 warnings")


@pytest.mark.slow
def test_cli_exits_1_with_one_line_per_problem(tmp_path: pathlib.Path) -> None:
    """A broken request exits 1 and prints `error: PATH: message` lines before the count."""
    doc = _base()
    doc["hookInstance"] = "nope"
    doc["context"]["selections"] = ["MedicationRequest/missing"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = _cli(str(path))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("warning: $.hookInstance: not a UUID: 'nope'") for line in lines)
    assert (
        "error: $.context.selections[0]: 'MedicationRequest/missing' is not an entry of "
        "context.draftOrders"
    ) in lines
    assert lines[-1].endswith(": 1 error, 1 warning")


@pytest.mark.slow
def test_cli_warnings_alone_exit_0(tmp_path: pathlib.Path) -> None:
    """Warnings (the lenient Epic-style order) are printed but do not fail the command."""
    result = _cli(str(REQUESTS / "lemtrada_by_medication_reference.json"))
    assert result.returncode == 0
    assert any(
        line.startswith("warning: $.context.draftOrders.entry[0].resource.intent")
        for line in result.stdout.splitlines()
    )


@pytest.mark.slow
def test_cli_json_output_for_machines() -> None:
    """--json prints the counts and every problem as objects; the exit status is unchanged."""
    result = _cli("--json", str(REQUESTS / "unreadable_hiv_result.json"))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["errors"] == 1
    assert report["problems"][0]["path"] == "$.prefetch.observations.entry[32].resource"
    assert report["problems"][0]["level"] == "error"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
    ids=["text that is not JSON", "bytes that are not UTF-8"],
)
@pytest.mark.slow
def test_cli_reports_an_unparsable_file_as_an_error(
    tmp_path: pathlib.Path, content: bytes, message: str
) -> None:
    """A file that is not JSON is one error at `$`, exit 1, not a traceback."""
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = _cli(str(path))
    assert result.returncode == 1
    assert result.stdout.startswith(f"error: $: {message}")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_reports_a_missing_file_as_an_error(tmp_path: pathlib.Path) -> None:
    """A path that does not exist is an error with exit 1."""
    result = _cli(str(tmp_path / "absent.json"))
    assert result.returncode == 1
    assert "cannot read" in result.stdout
