"""No secret and no patient identifier ever reaches a log line, at any level.

The service's own logging configuration (`observability.logging_config`, as `cds-service serve`
installs it) is set to DEBUG and its stderr captured, while real traffic runs through an app with
EHR authentication on: signed JWTs (accepted, replayed, expired, forged), a FHIR-server fallback
carrying an access token (answered, and refused by the server), a rule that crashes with patient
data in its exception message, feedback with a free-text comment, and malformed requests whose
bad values are patient data. Then every secret is searched for in every captured line.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir_stub_server import FhirStub, without_prefetch
from jwt_keys import claims, ec_key, jwks

from cds_service.app import create_app
from cds_service.domain import evaluate as evaluate_module
from cds_service.observability import configure_logging, logging_config

ROOT = Path(__file__).resolve().parents[1]
BASE = "https://cds.example.org"
ISS = "https://ehr.example.org"
SELECT = "/cds-services/lemtrada-order-select"
FEEDBACK = "/cds-services/lemtrada-order-select/feedback"

ACCESS_TOKEN = "fhir-access-7Hq2ZpW9xLr4Tn8KvB3m"
FAMILY, GIVEN = "Quillfeatherstone", "Perpetua"
IDENTIFIER = "MRN-58302917"
BIRTH_DATE = "1979-03-14"


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The production logging configuration at DEBUG, writing into a buffer; restored after."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    named = [name for name in logging_config()["loggers"]] + ["cds_service"]
    saved = {name: logging.getLogger(name).level for name in named}
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging("DEBUG")
    yield buffer
    for handler in root.handlers:
        if handler not in saved_root[1]:
            handler.close()
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def patient_request() -> dict[str, Any]:
    """The eligible fixture with a patient whose name, identifier and birth date are unique."""
    doc = json.loads((ROOT / "fhir_fixtures/requests/eligible_patient_at_order_select.json")
                     .read_text(encoding="utf-8"))
    patient = doc["prefetch"]["patient"]
    patient["name"] = [{"family": FAMILY, "given": [GIVEN]}]
    patient["identifier"] = [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": IDENTIFIER}]
    patient["birthDate"] = BIRTH_DATE
    return doc


def crashing(check: Callable[..., Any]) -> Callable[..., Any]:
    """A rule bug whose exception message quotes patient data (as a careless bug would)."""
    def check_with_bug(record: Any, order: Any, policy: Any) -> Any:
        raise ValueError(f"cannot read {GIVEN} {FAMILY} {IDENTIFIER} born {BIRTH_DATE} "
                         f"token {ACCESS_TOKEN}")
    return check_with_bug


def test_no_token_jwt_or_patient_identifier_is_ever_logged(
        captured_logs: io.StringIO, stubs: Callable[..., FhirStub],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tokens, JWTs, patient name, identifier and birth date appear in no log line at DEBUG."""
    key = ec_key("log-test")
    full = patient_request()
    stub = stubs(full, token=ACCESS_TOKEN)
    refusing = stubs(full, token="some-other-token")
    app = create_app(public_base_url=BASE, database_url=f"sqlite:///{tmp_path}/db.sqlite3",
                     trusted_issuers_json=json.dumps([{"iss": ISS, "jwks": jwks(key)}]),
                     fhir_server_allowlist=(stub.base_url, refusing.base_url),
                     http_allowed_hosts=("127.0.0.1",), fhir_deadline_seconds=3.0)
    client = app.test_client()
    jwts: list[str] = []

    def signed(path: str, **extra: Any) -> dict[str, str]:
        token = key.sign(claims(ISS, BASE + path, time.time(), **extra))
        jwts.append(token)
        return {"Authorization": f"Bearer {token}"}

    fetched = without_prefetch(full, stub.base_url, ACCESS_TOKEN)
    statuses: dict[str, int] = {}

    # Accepted JWT, data fetched from the FHIR server with the access token.
    headers = signed(SELECT)
    statuses["fhir fallback"] = client.post(SELECT, json=fetched, headers=headers).status_code
    # The same JWT again (replay), an expired one, a forged one, and not-a-JWT.
    statuses["replay"] = client.post(SELECT, json=fetched, headers=headers).status_code
    statuses["expired"] = client.post(SELECT, json=full, headers=signed(
        SELECT, exp=int(time.time()) - 3600, iat=int(time.time()) - 3900)).status_code
    forged = signed(SELECT)["Authorization"][:-6] + "AAAAAA"
    jwts.append(forged.removeprefix("Bearer "))
    statuses["forged"] = client.post(SELECT, json=full,
                                     headers={"Authorization": forged}).status_code
    statuses["garbage"] = client.post(SELECT, json=full, headers={
        "Authorization": f"Bearer {ACCESS_TOKEN}"}).status_code
    # The FHIR server refusing the access token.
    statuses["fhir 401"] = client.post(SELECT, json=without_prefetch(
        full, refusing.base_url, ACCESS_TOKEN), headers=signed(SELECT)).status_code
    # A rule that crashes with patient data and the token in its exception message.
    rules = tuple(dataclasses.replace(rule, check=crashing(rule.check))
                  if rule.topic == "vzv-immunity" else rule for rule in evaluate_module.RULES)
    monkeypatch.setattr(evaluate_module, "RULES", rules)
    crashed = client.post(SELECT, json=full, headers=signed(SELECT))
    statuses["rule crash"] = crashed.status_code
    monkeypatch.undo()
    # Bad requests whose bad values are patient data.
    bad = copy.deepcopy(full)
    bad["hookInstance"] = f"{GIVEN} {FAMILY}"
    bad["context"]["patientId"] = {"identifier": IDENTIFIER, "birthDate": BIRTH_DATE}
    statuses["bad request"] = client.post(SELECT, json=bad, headers=signed(SELECT)).status_code
    # Feedback with a free-text comment naming the patient.
    card = crashed.get_json()["cards"][0]["uuid"]
    statuses["feedback"] = client.post(FEEDBACK, headers=signed(FEEDBACK), json={"feedback": [{
        "card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z",
        "overrideReason": {"userComment": f"{GIVEN} {FAMILY} {IDENTIFIER} {BIRTH_DATE}"}}]}
    ).status_code
    app.extensions["cds_audit"].flush()
    metrics = client.get("/metrics").get_data(as_text=True)

    assert statuses == {"fhir fallback": 200, "replay": 401, "expired": 401, "forged": 401,
                        "garbage": 401, "fhir 401": 412, "rule crash": 200, "bad request": 400,
                        "feedback": 200}
    lines = captured_logs.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = {r["message"] for r in records}
    # The capture works: the calls above were logged, with identifiers of the call.
    assert {"hook answered", "hook refused", "EHR token refused", "feedback stored",
            "rule vzv-immunity failed"} <= messages
    assert any(r.get("hookInstance") == full["hookInstance"] for r in records)
    assert any("exc_info" in r for r in records), "the rule crash must be logged with its frames"
    secrets = {"access token": ACCESS_TOKEN, "family name": FAMILY, "given name": GIVEN,
               "identifier": IDENTIFIER, "birth date": BIRTH_DATE,
               **{f"JWT {i}": jwt for i, jwt in enumerate(jwts)},
               **{f"JWT {i} signature": jwt.rsplit(".", 1)[1] for i, jwt in enumerate(jwts)}}
    leaks = {name: [line for line in lines if secret in line]
             for name, secret in secrets.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert [name for name, secret in secrets.items() if secret in metrics] == []


def test_every_log_line_is_one_json_object_with_level_logger_and_time(
        captured_logs: io.StringIO) -> None:
    """A hook call logs one JSON line with hookInstance, service, duration, data origin, topics."""
    client = create_app(testing=True).test_client()
    request = patient_request()
    request["hookInstance"] = str(uuid.uuid4())
    assert client.post(SELECT, json=request).status_code == 200
    records = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    answered = [r for r in records if r["message"] == "hook answered"]
    assert len(answered) == 1
    line = answered[0]
    assert {"time", "level", "logger"} <= set(line)
    assert line["hookInstance"] == request["hookInstance"]
    assert line["service"] == "lemtrada-order-select"
    assert line["status"] == 200 and line["durationMs"] > 0
    assert line["dataOrigin"]["patient"] == "prefetch"
    assert "eligibility-summary:info" in line["topics"] or any(
        t.startswith("eligibility-summary:") for t in line["topics"])
