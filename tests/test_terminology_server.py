"""The optional terminology server (CDS_TERMINOLOGY_URL), against a REAL HTTP server process on
127.0.0.1 (tests/terminology_stub_server.py) started and stopped by its pid.

A Condition code no local value set lists is asked about with CodeSystem/$subsumes under each
value set's `is-a` roots; `subsumes`/`equivalent` make it a member, and the evidence says the
terminology server recognised it. Down, failing, hanging, trickling or garbage-answering servers
give the local answer within the deadline, with a log line and a metric. Without the setting
nothing leaves the process.

The value sets here are built by the tests from the shipped ones: their roots are set here (the
shipped files may or may not name roots yet), and the test codes are taken out of every value set
so that only the server can recognise them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from fixture_requests import SERVICE_URL, fixture_request
from prometheus_client import REGISTRY
from served import free_port, stop, wait_until_serving

from cds_service.app import create_app
from cds_service.cards import card_topic
from cds_service.config import Settings
from cds_service.domain import terminology
from cds_service.domain.policy import load_policy
from cds_service.domain.record import PatientRecord
from cds_service.domain.rules.indication import check_indication
from cds_service.domain.terminology import ValueSet, parse_value_set
from cds_service.terminology_server import (
    BadAnswer,
    TerminologyServer,
    subsumes_outcome,
    terminology_server,
)

pytestmark = pytest.mark.slow  # starts a server process

STUB = Path(__file__).resolve().parent / "terminology_stub_server.py"
SNOMED = "http://snomed.info/sct"
LUNG_CANCER = "254637007"  # Non-small cell lung cancer (disorder)
HYPOTHYROIDISM = "40930008"
SEPSIS = "91302008"
TYPE_2_DIABETES = "44054006"
TEST_CODES = frozenset({LUNG_CANCER, HYPOTHYROIDISM, SEPSIS, TYPE_2_DIABETES})
ROOTS = {
    "malignancy-condition": "363346000",  # Malignant neoplastic disease
    "thyroid-disorder-condition": "14304000",  # Disorder of thyroid gland
    "acute-infection-condition": "40733004",  # Infectious disease
}
DEADLINE = 1.0
MARGIN = 5.0
"""A generous margin over the deadline for a loaded machine: only "it did not wait for the
server" is asserted, never a speed."""
PATIENT = "p1"


# -- the server process -------------------------------------------------------------------------


@dataclasses.dataclass
class Stub:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def calls(self) -> list[dict[str, str]]:
        """The $subsumes queries the server received, in order."""
        answer: list[dict[str, str]] = requests.get(
            f"http://127.0.0.1:{self.port}/_calls", timeout=5
        ).json()
        return answer


@pytest.fixture
def start_stub() -> Iterator[Callable[..., Stub]]:
    """Start terminology server processes; each is stopped by its pid at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(fault: str | None = None) -> Stub:
        port = free_port()
        args = [sys.executable, str(STUB), "--port", str(port)]
        proc = subprocess.Popen(args + (["--fault", fault] if fault else []))
        started.append(proc)
        wait_until_serving(proc, f"http://127.0.0.1:{port}/fhir/metadata")
        return Stub(proc, port)

    yield start
    for proc in started:
        if proc.poll() is None:
            stop(proc)


# -- value sets and records ---------------------------------------------------------------------


def rooted_value_sets(shipped: dict[str, ValueSet]) -> dict[str, ValueSet]:
    """The shipped value sets with ROOTS as their only roots, and without the test codes."""
    return {
        vs_id: dataclasses.replace(
            vs,
            codes=frozenset(c for c in vs.codes if not (c[0] == SNOMED and c[1] in TEST_CODES)),
            roots=((SNOMED, ROOTS[vs_id]),) if vs_id in ROOTS else (),
        )
        for vs_id, vs in shipped.items()
    }


@pytest.fixture
def value_sets(monkeypatch: pytest.MonkeyPatch) -> dict[str, ValueSet]:
    """The test's value sets, seen by every rule (terminology.value_set reads all_value_sets)."""
    sets = rooted_value_sets(terminology.all_value_sets())
    monkeypatch.setattr(terminology, "all_value_sets", lambda: sets)
    return sets


def settings(url: str, **overrides: Any) -> Settings:
    return Settings(
        terminology_url=url,
        http_allowed_hosts=("127.0.0.1",),
        terminology_deadline_seconds=DEADLINE,
        database_url="sqlite://",
        **overrides,
    )


def condition(code: str, display: str, onset: date | None = None) -> dict[str, Any]:
    when = (onset or date.today() - timedelta(days=7)).isoformat()
    return {
        "resourceType": "Condition",
        "id": f"condition-{code}",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
        "onsetDateTime": when,
        "recordedDate": when,
    }


def record_of(*conditions: dict[str, Any]) -> PatientRecord:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": c} for c in conditions],
    }
    return PatientRecord.build(PATIENT, [bundle])


def lookups(outcome: str) -> float:
    return REGISTRY.get_sample_value("cds_terminology_lookups_total", {"outcome": outcome}) or 0.0


# -- through the service ------------------------------------------------------------------------

THE_SERVER_DECIDES = [
    pytest.param(
        LUNG_CANCER,
        "Non-small cell lung cancer",
        "malignancy",
        "recognised as Malignancy by the terminology server: a kind of 363346000",
        id="a SNOMED malignancy code the local set lacks is a malignancy warning when the server "
        "says it is subsumed by 363346000",
    ),
    pytest.param(
        HYPOTHYROIDISM,
        "Hypothyroidism",
        "thyroid-disorder",
        "recognised as Thyroid disorders: hypothyroidism, hyperthyroidism/Graves, thyroiditis "
        "by the terminology server: a kind of 14304000",
        id="a SNOMED hypothyroidism code the local set lacks is a thyroid warning when the server "
        "says it is subsumed by 14304000",
    ),
    pytest.param(
        SEPSIS,
        "Sepsis",
        "active-infection",
        "by the terminology server: a kind of 40733004",
        id="a SNOMED sepsis code the local sets lack is an active-infection finding when the "
        "server says it is subsumed by 40733004",
    ),
    pytest.param(
        TYPE_2_DIABETES,
        "Diabetes mellitus type 2",
        None,
        None,
        id="control: the server says type 2 diabetes is subsumed by no root -> no finding",
    ),
]
WATCHED = {"malignancy", "thyroid-disorder", "active-infection"}


def hook_request(code: str, display: str) -> dict[str, Any]:
    """An otherwise eligible patient's order-select call with one more active Condition."""
    request_json = fixture_request("eligible_patient_at_order_select")
    patient_id = request_json["context"]["patientId"]
    added = condition(code, display)
    added["subject"] = {"reference": f"Patient/{patient_id}"}
    request_json["prefetch"]["conditions"]["entry"].append({"resource": added})
    return request_json


def cards_by_topic(client: Any, request_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    response = client.post(SERVICE_URL[request_json["hook"]], json=request_json)
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    return {card_topic(card): card for card in response.get_json()["cards"]}


def recognised(client: Any, request_json: dict[str, Any]) -> tuple[set[str], str]:
    """The watched checks that found a current condition (checklist status not-met), and every
    card's text (where the evidence line says how the code was recognised)."""
    cards = cards_by_topic(client, request_json)
    checks = cards["eligibility-summary"]["extension"]["org.example.cds-service.checklist"]
    found = {c["topic"] for c in checks["checks"] if c["status"] == "not-met"}
    return WATCHED & found, "\n".join(card.get("detail", "") for card in cards.values())


def client_with(server: TerminologyServer | None) -> Any:
    app = create_app(testing=True)
    app.extensions["cds_terminology"] = server
    return app.test_client()


@pytest.mark.parametrize("code,display,topic,evidence", THE_SERVER_DECIDES)
def test_a_code_the_local_sets_lack_is_decided_by_the_terminology_server(
    start_stub: Callable[..., Stub],
    value_sets: dict[str, ValueSet],
    code: str,
    display: str,
    topic: str | None,
    evidence: str | None,
) -> None:
    stub = start_stub()
    request_json = hook_request(code, display)
    without_server, _ = recognised(client_with(None), request_json)
    assert without_server == set(), "the local sets must not know the test code"
    with_server, text = recognised(
        client_with(TerminologyServer(settings(stub.base_url), value_sets)), request_json
    )
    asked = {(c["codeA"], c["codeB"]) for c in stub.calls()}
    assert {(root, code) for root in ROOTS.values()} <= asked
    if topic is None:
        assert with_server == set()
        return
    assert with_server == {topic}
    assert evidence is not None and evidence in text
    assert f"SNOMED CT {code}, recognised as" in text


def test_a_hanging_server_does_not_hold_the_hook_call_past_its_deadline(
    start_stub: Callable[..., Stub], value_sets: dict[str, ValueSet]
) -> None:
    """The answer comes with the local answer (no malignancy card) within the deadline."""
    stub = start_stub("hang")
    client = client_with(TerminologyServer(settings(stub.base_url), value_sets))
    began = time.monotonic()
    found, _ = recognised(client, hook_request(LUNG_CANCER, "Non-small cell lung cancer"))
    assert time.monotonic() - began < DEADLINE + MARGIN
    assert "malignancy" not in found
    assert stub.calls(), "the server was asked (and never answered)"


# -- the client: failures, deadline, cache ------------------------------------------------------

FAILURES = [
    pytest.param("down", "failed", id="server down -> local answer and a log line"),
    pytest.param("500", "failed", id="server answers HTTP 500 -> local answer and a log line"),
    pytest.param(
        "garbage", "failed", id="server answers an HTML page -> local answer and a log line"
    ),
    pytest.param("hang", "unfinished", id="server hangs -> local answer within the deadline"),
    pytest.param(
        "trickle",
        "unfinished",
        id="server trickles its answer a byte at a time -> local answer within the deadline",
    ),
]


@pytest.mark.parametrize("fault,outcome", FAILURES)
def test_a_failing_server_leaves_the_local_answer(
    start_stub: Callable[..., Stub],
    value_sets: dict[str, ValueSet],
    caplog: pytest.LogCaptureFixture,
    fault: str,
    outcome: str,
) -> None:
    stub = start_stub(None if fault == "down" else fault)
    if fault == "down":
        stop(stub.proc)  # nothing listens on its port any more
    server = TerminologyServer(settings(stub.base_url), value_sets)
    before = lookups(outcome)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cds_service.terminology_server"):
        members = server(record_of(condition(LUNG_CANCER, "Non-small cell lung cancer")))
    assert time.monotonic() - began < DEADLINE + MARGIN
    assert members == {}
    assert lookups(outcome) - before == len(ROOTS)  # one question per root
    assert any("terminology server" in r.getMessage() for r in caplog.records)
    assert len(server.cache) == 0, "a failure is not an answer: nothing cached"


CACHED = [
    pytest.param(
        LUNG_CANCER,
        {"malignancy-condition": {(SNOMED, LUNG_CANCER): (SNOMED, "363346000")}},
        id="repeat request -> served from the cache (the server sees one call)",
    ),
    pytest.param(
        TYPE_2_DIABETES,
        {},
        id="a negative answer is cached too (the server sees one call)",
    ),
]


@pytest.mark.parametrize("code,members", CACHED)
def test_answers_are_cached_per_process(
    start_stub: Callable[..., Stub],
    code: str,
    members: dict[str, dict[tuple[str, str], tuple[str, str]]],
) -> None:
    shipped = rooted_value_sets(terminology.all_value_sets())
    only_malignancy = {
        vs_id: vs if vs_id == "malignancy-condition" else dataclasses.replace(vs, roots=())
        for vs_id, vs in shipped.items()
    }
    stub = start_stub()
    server = TerminologyServer(settings(stub.base_url), only_malignancy)
    record = record_of(condition(code, "a condition"))
    first, second = server(record), server(record)
    assert first == second == members
    assert stub.calls() == [{"system": SNOMED, "codeA": "363346000", "codeB": code}]


def test_an_answer_is_asked_again_after_its_time_to_live(
    start_stub: Callable[..., Stub], value_sets: dict[str, ValueSet]
) -> None:
    now = [0.0]
    stub = start_stub()
    server = TerminologyServer(
        settings(stub.base_url, terminology_cache_seconds=3600.0),
        value_sets,
        clock=lambda: now[0],
    )
    record = record_of(condition(LUNG_CANCER, "Non-small cell lung cancer"))
    server(record)
    now[0] = 3599.0
    server(record)
    assert len(stub.calls()) == len(ROOTS)
    now[0] = 3601.0
    server(record)
    assert len(stub.calls()) == 2 * len(ROOTS)


def test_only_codes_no_local_value_set_lists_are_asked(
    start_stub: Callable[..., Stub], value_sets: dict[str, ValueSet]
) -> None:
    """A code a local value set lists (here an HIV code) is never sent; only system and codes
    are (no patient identifier, date or text)."""
    hiv = sorted(c for s, c in value_sets["hiv-condition"].codes if s == SNOMED)[0]
    stub = start_stub()
    server = TerminologyServer(settings(stub.base_url), value_sets)
    server(record_of(condition(hiv, "HIV"), condition(SEPSIS, "Sepsis")))
    calls = stub.calls()
    assert {c["codeB"] for c in calls} == {SEPSIS}
    assert all(set(c) == {"system", "codeA", "codeB"} for c in calls)


def test_nothing_is_asked_when_the_hook_calls_budget_is_spent(
    start_stub: Callable[..., Stub], value_sets: dict[str, ValueSet]
) -> None:
    """A FHIR fetch that used the whole CDS_FHIR_DEADLINE_SECONDS leaves the questions no time:
    the local answer, without a call."""
    stub = start_stub()
    config = settings(stub.base_url)
    server = TerminologyServer(config, value_sets)
    before = lookups("unfinished")
    started = time.monotonic() - config.fhir_deadline_seconds
    lookup = server.lookup(record_of(condition(LUNG_CANCER, "Lung cancer")), started)
    assert lookup.members == {}
    assert lookup.unfinished == len(ROOTS)
    assert lookups("unfinished") - before == len(ROOTS)
    assert stub.calls() == []


# -- without the setting ------------------------------------------------------------------------


def test_without_the_setting_no_connection_is_attempted(
    monkeypatch: pytest.MonkeyPatch, value_sets: dict[str, ValueSet]
) -> None:
    """No CDS_TERMINOLOGY_URL: no terminology client exists, and a whole hook call with codes no
    local set knows opens no socket at all."""
    monkeypatch.delenv("CDS_TERMINOLOGY_URL", raising=False)
    app = create_app(testing=True)
    assert app.extensions["cds_terminology"] is None
    attempts: list[Any] = []

    def refuse(sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("no connection may leave the process")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    found, _ = recognised(
        app.test_client(), hook_request(LUNG_CANCER, "Non-small cell lung cancer")
    )
    assert "malignancy" not in found
    assert attempts == []


UNUSABLE = [
    pytest.param("http://terminology.example.org/fhir", id="plain http to a host not allowed http"),
    pytest.param("https://user@terminology.example.org/fhir", id="credentials in the URL"),
    pytest.param("ftp://terminology.example.org/fhir", id="not http(s)"),
]


@pytest.mark.parametrize("url", UNUSABLE)
def test_an_unusable_url_is_logged_and_nothing_is_asked(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cds_service.terminology_server"):
        assert terminology_server(Settings(terminology_url=url, database_url="sqlite://")) is None
    assert any("CDS_TERMINOLOGY_URL" in r.getMessage() for r in caplog.records)


# -- the value-set format -----------------------------------------------------------------------


def test_roots_are_read_from_the_is_a_filters_of_compose() -> None:
    vs = parse_value_set(
        {
            "resourceType": "ValueSet",
            "id": "x",
            "url": "https://example.org/x",
            "compose": {
                "include": [
                    {
                        "system": SNOMED,
                        "filter": [{"property": "concept", "op": "is-a", "value": "363346000"}],
                    },
                    {
                        "system": "http://hl7.org/fhir/sid/icd-10-cm",
                        "filter": [{"property": "code", "op": "regex", "value": "C.*"}],
                    },
                    {"system": SNOMED, "concept": [{"code": "372130007"}]},
                ]
            },
        }
    )
    assert vs.roots == ((SNOMED, "363346000"),)
    assert (SNOMED, "363346000") not in vs, "an is-a root is not evaluated locally"


def parameters(*outcomes: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "outcome", "valueCode": o} for o in outcomes],
    }


READINGS = [
    pytest.param(parameters("subsumes"), True, id="subsumes: the root subsumes the code, member"),
    pytest.param(parameters("equivalent"), True, id="equivalent: the code is the root, member"),
    pytest.param(parameters("subsumed-by"), False, id="subsumed-by: the code is above the root"),
    pytest.param(parameters("not-subsumed"), False, id="not-subsumed: not a member"),
]
GARBAGE = [
    pytest.param(b"<html>log in</html>", id="not JSON"),
    pytest.param(b"[]", id="JSON that is not a resource"),
    pytest.param(
        b'{"resourceType": "OperationOutcome", "issue": []}', id="an OperationOutcome with 200"
    ),
    pytest.param(json.dumps(parameters()).encode(), id="Parameters without an outcome"),
    pytest.param(json.dumps(parameters("subsumes", "not-subsumed")).encode(), id="two outcomes"),
    pytest.param(json.dumps(parameters("maybe")).encode(), id="an outcome $subsumes never gives"),
]


@pytest.mark.parametrize("answer,member", READINGS)
def test_a_subsumes_answer_is_read(answer: dict[str, Any], member: bool) -> None:
    assert subsumes_outcome(json.dumps(answer).encode()) is member


@pytest.mark.parametrize("body", GARBAGE)
def test_an_answer_that_is_not_a_subsumes_result_is_refused(body: bytes) -> None:
    with pytest.raises(BadAnswer):
        subsumes_outcome(body)


# -- every check sees the server's answer (PatientRecord.member) --------------------------------

PPMS_ONLY = "FAKE-PPMS"
"""A code no value set lists; the rows below say what the server placed it under."""
MS_ROOT = (SNOMED, "24700007")
PPMS_ROOT = (SNOMED, "83942000")
INDICATION_ROWS = [
    pytest.param(
        {"ms-diagnosis-condition": {(SNOMED, PPMS_ONLY): MS_ROOT}},
        "ms-on-file",
        id="a code the server places under multiple sclerosis is an MS diagnosis on file",
    ),
    pytest.param(
        {
            "ms-diagnosis-condition": {(SNOMED, PPMS_ONLY): MS_ROOT},
            "ms-primary-progressive-condition": {(SNOMED, PPMS_ONLY): PPMS_ROOT},
        },
        "not-indicated",
        id="a code the server places under primary progressive MS too is not indicated",
    ),
    pytest.param({}, "no-ms-diagnosis", id="control: without the server the code is nothing"),
]


@pytest.mark.parametrize("members,reason", INDICATION_ROWS)
def test_the_indication_check_reads_membership_through_the_record(
    members: dict[str, dict[tuple[str, str], tuple[str, str]]], reason: str
) -> None:
    record = record_of(condition(PPMS_ONLY, "Multiple sclerosis of a kind"))
    record.extra_members = members
    finding = check_indication(record, None, load_policy())  # type: ignore[arg-type]
    assert finding.reason == reason
