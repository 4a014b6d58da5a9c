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
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir_stub_server import FhirStub, without_prefetch
from jwt_keys import claims, ec_key, jwks
from served import free_port, raw_exchange, stop, wait_until_serving

from cds_service.app import create_app
from cds_service.domain import evaluate as evaluate_module
from cds_service.observability import configure_logging, loggable, logging_config

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
    doc = json.loads(
        (ROOT / "fhir_fixtures/requests/eligible_patient_at_order_select.json").read_text(
            encoding="utf-8"
        )
    )
    patient = doc["prefetch"]["patient"]
    patient["name"] = [{"family": FAMILY, "given": [GIVEN]}]
    patient["identifier"] = [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": IDENTIFIER}]
    patient["birthDate"] = BIRTH_DATE
    return doc


def crashing(check: Callable[..., Any]) -> Callable[..., Any]:
    """A rule bug whose exception message quotes patient data (as a careless bug would)."""

    def check_with_bug(record: Any, order: Any, policy: Any) -> Any:
        raise ValueError(
            f"cannot read {GIVEN} {FAMILY} {IDENTIFIER} born {BIRTH_DATE} token {ACCESS_TOKEN}"
        )

    return check_with_bug


def test_no_token_jwt_or_patient_identifier_is_ever_logged(
    captured_logs: io.StringIO,
    stubs: Callable[..., FhirStub],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Tokens, JWTs, patient name, identifier and birth date appear in no log line at DEBUG."""
    key = ec_key("log-test")
    full = patient_request()
    stub = stubs(full, token=ACCESS_TOKEN)
    refusing = stubs(full, token="some-other-token")
    app = create_app(
        public_base_url=BASE,
        database_url=f"sqlite:///{tmp_path}/db.sqlite3",
        trusted_issuers_json=json.dumps([{"iss": ISS, "jwks": jwks(key)}]),
        fhir_server_allowlist=(stub.base_url, refusing.base_url),
        http_allowed_hosts=("127.0.0.1",),
        fhir_deadline_seconds=3.0,
    )
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
    statuses["expired"] = client.post(
        SELECT,
        json=full,
        headers=signed(SELECT, exp=int(time.time()) - 3600, iat=int(time.time()) - 3900),
    ).status_code
    forged = signed(SELECT)["Authorization"][:-6] + "AAAAAA"
    jwts.append(forged.removeprefix("Bearer "))
    statuses["forged"] = client.post(
        SELECT, json=full, headers={"Authorization": forged}
    ).status_code
    statuses["garbage"] = client.post(
        SELECT, json=full, headers={"Authorization": f"Bearer {ACCESS_TOKEN}"}
    ).status_code
    # The FHIR server refusing the access token.
    statuses["fhir 401"] = client.post(
        SELECT, json=without_prefetch(full, refusing.base_url, ACCESS_TOKEN), headers=signed(SELECT)
    ).status_code
    # A rule that crashes with patient data and the token in its exception message.
    rules = tuple(
        dataclasses.replace(rule, check=crashing(rule.check))
        if rule.topic == "vzv-immunity"
        else rule
        for rule in evaluate_module.RULES
    )
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
    statuses["feedback"] = client.post(
        FEEDBACK,
        headers=signed(FEEDBACK),
        json={
            "feedback": [
                {
                    "card": card,
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-21T10:00:00Z",
                    "overrideReason": {
                        "userComment": f"{GIVEN} {FAMILY} {IDENTIFIER} {BIRTH_DATE}"
                    },
                }
            ]
        },
    ).status_code
    app.extensions["cds_audit"].flush()
    metrics = client.get("/metrics").get_data(as_text=True)

    assert statuses == {
        "fhir fallback": 200,
        "replay": 401,
        "expired": 401,
        "forged": 401,
        "garbage": 401,
        "fhir 401": 412,
        "rule crash": 200,
        "bad request": 400,
        "feedback": 200,
    }
    lines = captured_logs.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = {r["message"] for r in records}
    # The capture works: the calls above were logged, with identifiers of the call.
    assert {
        "hook answered",
        "hook refused",
        "EHR token refused",
        "feedback stored",
        "rule vzv-immunity failed",
    } <= messages
    assert any(r.get("hookInstance") == full["hookInstance"] for r in records)
    assert any("exc_info" in r for r in records), "the rule crash must be logged with its frames"
    secrets = {
        "access token": ACCESS_TOKEN,
        "family name": FAMILY,
        "given name": GIVEN,
        "identifier": IDENTIFIER,
        "birth date": BIRTH_DATE,
        **{f"JWT {i}": jwt for i, jwt in enumerate(jwts)},
        **{f"JWT {i} signature": jwt.rsplit(".", 1)[1] for i, jwt in enumerate(jwts)},
    }
    leaks = {name: [line for line in lines if secret in line] for name, secret in secrets.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert [name for name, secret in secrets.items() if secret in metrics] == []


def test_every_log_line_is_one_json_object_with_level_logger_and_time(
    captured_logs: io.StringIO,
) -> None:
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
        t.startswith("eligibility-summary:") for t in line["topics"]
    )


# -- a served instance: gunicorn's own lines too -------------------------------------------------

MRN_PATH = "/cds-services/Jane-Doe-MRN-12345"
PATIENT_VALUES = {
    "name in a path": "Jane-Doe",
    "MRN in a path": "MRN-12345",
    "birth date in a query": "1970-01-01",
}


@pytest.mark.slow
def test_a_served_instance_logs_no_token_or_patient_data_from_any_layer(tmp_path: Path) -> None:
    """`cds-service serve` at DEBUG with authentication on, sent what gunicorn refuses (a
    malformed header line carrying a JWT, a request line holding a name, an MRN and a birth
    date, a garbage request line, oversized lines, a header cut off mid-token) and what the app
    refuses: no captured stderr line, from gunicorn, the app or a library, holds the JWT or the
    patient's values, and every line is one JSON object."""
    key = ec_key("served-log-test")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "CDS_LOG_LEVEL": "DEBUG",
        "CDS_PUBLIC_BASE_URL": base,
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "CDS_TRUSTED_ISSUERS_JSON": json.dumps([{"iss": ISS, "jwks": jwks(key)}]),
    }
    env.pop("CDS_TRUSTED_ISSUERS_FILE", None)
    jwt = key.sign(claims(ISS, base + SELECT, time.time()))
    unused_jwt = key.sign(claims(ISS, base + SELECT, time.time()))
    mrn_jwt = key.sign(claims(ISS, base + MRN_PATH, time.time()))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(proc, base + "/healthz", why_exited=log_path.read_text)
            statuses = served_traffic(port, jwt, unused_jwt, mrn_jwt)
        finally:
            stop(proc)
    assert statuses == {
        "signed hook call": 200,
        "malformed header line with a JWT": 400,
        "patient data in the request line, no token": 401,
        "patient data in the request line, signed": 404,
        "garbage request line with patient data": 400,
        "request line too long": 414,
        "header line too long": 431,
    }
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = {r["message"] for r in records}
    # The capture works: gunicorn's, the app's and the access lines are all there.
    assert {
        "hook answered",
        "EHR token refused",
        "request refused by the HTTP server",
        "http request",
    } <= messages
    # gunicorn's message for the header cut off quotes the bytes it had read: withheld.
    assert "Ignored premature client disconnection. NoMoreData (message withheld)" in messages
    assert {
        r.get("status") for r in records if r["message"] == "request refused by the HTTP server"
    } == {400, 414, 431}
    assert {r["route"] for r in records if r["message"] == "http request"} >= {
        SELECT,
        "/cds-services/(unknown service)",
    }
    secrets = {
        "JWT": jwt,
        "JWT signature": jwt.rsplit(".", 1)[1],
        "unused JWT": unused_jwt,
        "unused JWT signature": unused_jwt.rsplit(".", 1)[1],
        "JWT for the MRN path": mrn_jwt,
        **PATIENT_VALUES,
    }
    leaks = {name: [line for line in lines if secret in line] for name, secret in secrets.items()}
    assert {name: found for name, found in leaks.items() if found} == {}


def served_traffic(port: int, jwt: str, unused_jwt: str, mrn_jwt: str) -> dict[str, int]:
    """The requests of the served leak test, by name, with the status each got."""
    host = b"Host: 127.0.0.1\r\nConnection: close\r\n"
    body = (ROOT / "fhir_fixtures/requests/eligible_patient_at_order_select.json").read_bytes()
    patient_line = f"GET {MRN_PATH}?dob=1970-01-01 HTTP/1.1\r\n".encode()
    sent = {
        "signed hook call": (
            f"POST {SELECT} HTTP/1.1\r\nAuthorization: Bearer {jwt}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}"
            "\r\n"
        ).encode()
        + host
        + b"\r\n"
        + body,
        "malformed header line with a JWT": (
            f"POST {SELECT} HTTP/1.1\r\n".encode()
            + host
            + f"Authorization Bearer {unused_jwt}\r\n\r\n".encode()
        ),
        "patient data in the request line, no token": patient_line + host + b"\r\n",
        "patient data in the request line, signed": (
            patient_line.replace(b"GET", b"POST")
            + host
            + f"Authorization: Bearer {mrn_jwt}\r\nContent-Length: 2\r\n\r\n{{}}".encode()
        ),
        "garbage request line with patient data": b"Jane-Doe MRN-12345 1970-01-01\r\n"
        + host
        + b"\r\n",
        "request line too long": (
            f"GET {MRN_PATH}?dob=1970-01-01&pad={'x' * 5000} HTTP/1.1\r\n"
        ).encode()
        + host
        + b"\r\n",
        "header line too long": (
            f"GET {MRN_PATH} HTTP/1.1\r\n".encode()
            + host
            + f"X-Token: {unused_jwt * 40}\r\n\r\n".encode()
        ),
    }
    # First (so it is logged long before the server stops): a header cut off in the middle of
    # the token, the connection then closed (no answer).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /cds-services HTTP/1.1\r\nAuthorization: Bearer {unused_jwt}".encode())
    return {name: raw_exchange(port, payload)[0] for name, payload in sent.items()}


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        pytest.param(None, None, id="nothing stays nothing"),
        pytest.param(
            "6b3c1c9e-3f0a-4c55-9b7e-3f9f1b2a4c10",
            "6b3c1c9e-3f0a-4c55-9b7e-3f9f1b2a4c10",
            id="a UUID is logged as it is",
        ),
        pytest.param(
            "a\nfake log line\x1b[31m",
            "a\\nfake log line\\x1b[31m",
            id="control characters are escaped, so no line or colour can be forged",
        ),
        pytest.param("Jos\u00e9\u202e", "Jos\\xe9\\u202e", id="non-ASCII is escaped"),
        pytest.param(
            "x" * 4_000_000,
            "x" * 128 + "...(+3999872 characters)",
            id="a 4 MB value is cut to 128 characters and says how much was left out",
        ),
        pytest.param(12345, "12345", id="a value that is not a string is logged as its repr"),
    ],
)
def test_client_chosen_values_are_bounded_and_escaped_before_they_are_logged(
    value: object, logged: str | None
) -> None:
    assert loggable(value) == logged
