"""The independent attack run of issue 11, re-run against the service as shipped.

One `cds-service serve` (gevent workers, 2 of them, EHR authentication on) is started for the
module, with a trusted issuer whose keys come from a key server the test controls, a SQLite
database in a temporary folder, a FHIR allow-list naming a local FHIR stub, and its log at DEBUG
captured to a file. Each row of the table is one finding of the attack run, named as the issue
states it, and checks the outcome a defender needs. The detailed tests of each protection live in
the test files named in docs/deployment.md ("Attack list"); this table keeps the attacks
themselves from coming back. 127.0.0.1 only; every process and server started here is stopped.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import requests
from fhir_stub_server import FhirStub, without_prefetch
from fixture_requests import fixture_request
from jwt_keys import (
    JwksServer,
    SigningKey,
    claims,
    ec_key,
    payload_text,
    rsa_key,
    sign_text,
)
from prometheus_client.parser import text_string_to_metric_families
from served import free_port, raw_exchange, stop, wait_until_serving
from slow_clients import SlowClients
from test_fhir_allowlist_escapes import stays_under_fhir

# Slow: a real server and the whole attack run; `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ISS = "https://ehr.example.org"
SLOW_ISS = "https://slow-ehr.example.org"
SELECT = "/cds-services/lemtrada-order-select"
FEEDBACK = f"{SELECT}/feedback"
FHIR_TOKEN = "stub-token"
JWKS_DEADLINE = 1.0  # CDS_JWKS_DEADLINE_SECONDS of the served instance
MARGIN = 5.0  # generous: these rows show a bound where there was none, not a speed
DEADLINE = 10.0  # per honest call while the service is under attack


@dataclass
class Served:
    """The running service and everything around it the rows look at."""

    port: int
    base: str
    log_path: Path
    db_path: Path
    ec: SigningKey  # published by the trusted issuer without `alg`
    rsa: SigningKey  # published by the trusted issuer without `alg`
    keys: JwksServer
    fhir: FhirStub

    def token(self, path: str, signer: SigningKey | None = None, iss: str = ISS) -> str:
        return (signer or self.ec).sign(claims(iss, self.base + path, time.time()))

    def signed(self, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(path)}"}

    def post(
        self, path: str, body: Any, authorization: str | None = None, timeout: float = DEADLINE
    ) -> requests.Response:
        headers = {"Authorization": authorization} if authorization else self.signed(path)
        return requests.post(self.base + path, json=body, headers=headers, timeout=timeout)

    def refusals(self) -> dict[str, float]:
        """cds_auth_failures_total by reason, summed over the workers as /metrics reports it."""
        text = requests.get(self.base + "/metrics", timeout=DEADLINE).text
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "cds_auth_failures_total":
                    reason = sample.labels["reason"]
                    counts[reason] = counts.get(reason, 0.0) + sample.value
        return counts

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def logged(self, message: str) -> int:
        """How many log lines carry this message (every line is one JSON object)."""
        return sum(json.loads(line).get("message") == message for line in self.log_lines())

    def wait_logged(self, message: str, more_than: int) -> None:
        """Wait until a line with `message` beyond the first `more_than` has been written: what
        the row's request made the server log is then in the file."""
        give_up = time.monotonic() + MARGIN
        while self.logged(message) <= more_than:
            assert time.monotonic() < give_up, f"no new {message!r} line in {MARGIN:g} s"
            time.sleep(0.1)

    def database_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.db_path.parent.glob(self.db_path.name + "*"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("attacked")
    ec, rsa = ec_key("ec-2026"), rsa_key("rsa-2026")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path, db_path = folder / "server.log", folder / "db.sqlite3"
    with (
        JwksServer() as keys,
        FhirStub(fixture_request("eligible_patient_at_order_select"), token=FHIR_TOKEN) as fhir,
    ):
        keys.documents["/ehr-jwks.json"] = {
            "keys": [ec.public_jwk(with_alg=False), rsa.public_jwk(with_alg=False)]
        }
        keys.documents["/slow-jwks.json"] = {"keys": [ec_key("slow-issuer-key").public_jwk()]}
        keys.slow["/slow-jwks.json"] = "body"  # headers at once, then a byte every 0.5 s
        issuers = [
            {"iss": ISS, "jwks_url": keys.url("/ehr-jwks.json")},
            {"iss": SLOW_ISS, "jwks_url": keys.url("/slow-jwks.json")},
        ]
        env = {
            **os.environ,
            "CDS_LOG_LEVEL": "DEBUG",
            "CDS_PUBLIC_BASE_URL": base,
            "CDS_DATABASE_URL": f"sqlite:///{db_path}",
            "CDS_TRUSTED_ISSUERS_JSON": json.dumps(issuers),
            "CDS_HTTP_ALLOWED_HOSTS": "127.0.0.1",
            "CDS_FHIR_SERVER_ALLOWLIST": fhir.base_url,
            "CDS_JWKS_DEADLINE_SECONDS": str(JWKS_DEADLINE),
        }
        for name in (
            "CDS_TRUSTED_ISSUERS_FILE",
            "CDS_WORKERS",
            "CDS_KEEPALIVE_SECONDS",
            "CDS_WORKER_CONNECTIONS",
            "CDS_CORS_ALLOWED_ORIGINS",
        ):
            env.pop(name, None)
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
                    "2",
                ],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until_serving(
                    proc, base + "/readyz", why_exited=lambda: log_path.read_text()[-2000:]
                )
                yield Served(port, base, log_path, db_path, ec, rsa, keys, fhir)
            finally:
                stop(proc)


# -- the rows ------------------------------------------------------------------------------------


def honest_hook_calls(served: Served, count: int) -> list[str]:
    """`count` signed hook calls, one after the other, each on a new connection: what went
    wrong with any of them (an empty list when every one got cards within DEADLINE)."""
    problems = []
    for _ in range(count):
        try:
            response = served.post(SELECT, fixture_request("eligible_patient_at_order_select"))
            if response.status_code != 200 or not response.json()["cards"]:
                problems.append(f"HTTP {response.status_code}")
        except requests.RequestException as exc:
            problems.append(type(exc).__name__)
    return problems


def slow_clients_do_not_stop_honest_calls(count: int) -> Callable[[Served], None]:
    def check(served: Served) -> None:
        with SlowClients(served.port, count=count, interval=0.5, max_seconds=60) as attack:
            assert attack.open_now == count
            assert honest_hook_calls(served, 5) == []

    return check


def jwks_trickle_does_not_hold_the_workers(served: Served) -> None:
    """Two tokens naming kids the slow issuer never published make the service fetch its keys
    from a server trickling a byte every 0.5 s; signed calls from the other issuer go on."""
    before = served.refusals()

    def unknown_kid() -> tuple[int, float]:
        started = time.monotonic()
        authorization = f"Bearer {served.token('/cds-services', ec_key('made-up'), SLOW_ISS)}"
        response = requests.get(
            served.base + "/cds-services",
            headers={"Authorization": authorization},
            timeout=JWKS_DEADLINE + MARGIN,
        )
        return response.status_code, time.monotonic() - started

    with ThreadPoolExecutor(2) as pool:
        stuck = [pool.submit(unknown_kid) for _ in range(2)]
        honest = honest_hook_calls(served, 3)
        refused = [future.result() for future in stuck]
    assert honest == []
    assert [status for status, _ in refused] == [401, 401]
    assert max(took for _, took in refused) < JWKS_DEADLINE + MARGIN
    assert served.refusals().get("jwks-unavailable", 0.0) - before.get("jwks-unavailable", 0.0) == 2


def refused_and_counted(token: Callable[[Served], str], reason: str) -> Callable[[Served], None]:
    """A bare 401 for discovery, counted under `reason` (it was a 500, or an acceptance)."""

    def check(served: Served) -> None:
        before = served.refusals()
        response = requests.get(
            served.base + "/cds-services",
            timeout=DEADLINE,
            headers={"Authorization": f"Bearer {token(served)}"},
        )
        assert response.status_code == 401, response.text[:300]
        after = served.refusals()
        assert {
            r: after[r] - before.get(r, 0.0) for r in after if after[r] != before.get(r, 0.0)
        } == {reason: 1.0}

    return check


def naming_the_other_key_type(
    alg: str, attacker: SigningKey, named: str
) -> Callable[[Served], str]:
    """A token with header `alg` naming the issuer's key of the other type (whose JWK has no
    alg), signed with an attacker's key: no valid signature is needed to reach the bug."""

    def token(served: Served) -> str:
        kid = served.rsa.kid if named == "rsa" else served.ec.kid
        return jwt.encode(
            claims(ISS, served.base + "/cds-services", time.time()),
            attacker.private,
            algorithm=alg,
            headers={"typ": "JWT", "kid": kid},
        )

    return token


def time_claim(claim: str, literal: str) -> Callable[[Served], str]:
    """A correctly signed token whose `claim` is written literally (NaN) in the payload."""

    def token(served: Served) -> str:
        payload = payload_text(
            claims(ISS, served.base + "/cds-services", time.time()), **{claim: literal}
        )
        return sign_text(served.ec, payload)

    return token


def fhir_path_escape(
    server: Callable[[str], str] | None = None, next_link: str | None = None
) -> Callable[[Served], None]:
    """A hook call without prefetch whose fhirServer (or the server's next link) climbs out of
    the allow-listed /fhir: 412, and the stub saw no request outside /fhir, so the EHR's token
    never went there."""

    def check(served: Served) -> None:
        stub = served.fhir
        seen = len(stub.requests)
        url = server(stub.base_url) if server else stub.base_url
        if next_link is not None:
            stub.fault, stub.fault_types, stub.next_elsewhere = (
                "next-elsewhere",
                ("Observation",),
                next_link,
            )
        try:
            response = served.post(
                SELECT,
                without_prefetch(
                    fixture_request("eligible_patient_at_order_select"), url, FHIR_TOKEN
                ),
                timeout=DEADLINE + MARGIN,
            )
        finally:
            stub.fault, stub.fault_types = None, ()
        assert response.status_code == 412, response.text[:500]
        assert "admin" not in response.text
        received = stub.requests[seen:]
        assert [r.path for r in received if not stays_under_fhir(r.path)] == []
        assert [r.path for r in received if r.authorization and not stays_under_fhir(r.path)] == []
        if next_link is None:
            assert received == [], "a fhirServer with a path trick must not be called at all"
        else:
            assert any(r.path == "/fhir/Observation" for r in received), "no page was fetched"

    return check


def huge_hook_instance_fills_neither_disk_nor_log(served: Served) -> None:
    """Three posts with a 4 MiB hookInstance (before: +120 MiB of database, +12 MiB of log)."""
    value = "Hook-Instance-Attack-" + "h" * (4 * 1024 * 1024)
    time.sleep(0.5)  # card audits of earlier rows are written in the background
    db_before, log_before = served.database_bytes(), served.log_path.stat().st_size
    refused_before = served.logged("http request")
    for _ in range(3):
        response = served.post(
            SELECT,
            {**fixture_request("eligible_patient_at_order_select"), "hookInstance": value},
            timeout=DEADLINE + MARGIN,
        )
        assert response.status_code == 400, response.text[:300]
        assert response.json()["issue"][0]["expression"] == ["hookInstance"]
    served.wait_logged("http request", refused_before + 2)
    assert served.database_bytes() - db_before < 256 * 1024
    assert served.log_path.stat().st_size - log_before < 64 * 1024
    assert [line[:200] for line in served.log_lines() if value[:1024] in line] == []


def malformed_header_line_with_a_jwt_is_not_logged(served: Served) -> None:
    unused = served.token(SELECT)
    logged_before = served.logged("request refused by the HTTP server")
    status, _, _ = raw_exchange(
        served.port,
        (
            f"POST {SELECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization Bearer {unused}\r\n\r\n"
        ).encode(),
    )
    assert status == 400
    served.wait_logged("request refused by the HTTP server", logged_before)
    secrets = (unused, unused.rsplit(".", 1)[1])
    assert [line[:200] for line in served.log_lines() if any(s in line for s in secrets)] == []


PATIENT_VALUES = ("Perpetua-Quillfeatherstone", "MRN-58302917", "1979-03-14")


def request_line_with_patient_data_is_not_logged(served: Served) -> None:
    name, mrn, born = PATIENT_VALUES
    logged_before = served.logged("http request")
    status, _, _ = raw_exchange(
        served.port,
        (
            f"GET /cds-services/{name}-{mrn}?birthdate={born} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Connection: close\r\n\r\n"
        ).encode(),
    )
    assert status == 401
    served.wait_logged("http request", logged_before)
    assert [
        line[:200] for line in served.log_lines() if any(value in line for value in PATIENT_VALUES)
    ] == []


def unverified_iss_is_logged_bounded(served: Served) -> None:
    """A token from no trusted issuer whose `iss` is 4,000 characters (not signed by anyone the
    service knows): refused, and the claimed issuer is logged cut to a bound, never verbatim."""
    claimed = "https://Forged-Issuer-9c2e.example.org/" + "i" * 4000
    logged_before = served.logged("EHR token refused")
    refused_and_counted(
        lambda s: ec_key("forger").sign(claims(claimed, s.base + "/cds-services", time.time())),
        "untrusted-iss",
    )(served)
    served.wait_logged("EHR token refused", logged_before)
    assert [line[:200] for line in served.log_lines() if "i" * 200 in line] == []


def method_not_allowed_names_allow(served: Served) -> None:
    response = requests.get(served.base + SELECT, headers=served.signed(SELECT), timeout=DEADLINE)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert response.json()["resourceType"] == "OperationOutcome"


def oversized_header_is_json_with_cors(served: Served) -> None:
    status, headers, body = raw_exchange(
        served.port,
        (
            "GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://ehr.example.org\r\n"
            f"X-Big: {'x' * 9000}\r\n\r\n"
        ).encode(),
    )
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] in ("*", "https://ehr.example.org")
    assert orjson.loads(body)["resourceType"] == "OperationOutcome"


MARKER = "Sender-Value-7f3a"


def error_bodies_do_not_repeat_the_sender(served: Served) -> None:
    unknown = SELECT.replace("lemtrada-order-select", MARKER)
    not_found = served.post(unknown, fixture_request("eligible_patient_at_order_select"))
    bad = served.post(
        SELECT, {**fixture_request("eligible_patient_at_order_select"), "hookInstance": MARKER * 8}
    )
    assert (not_found.status_code, bad.status_code) == (404, 400)
    for response in (not_found, bad):
        assert response.json()["resourceType"] == "OperationOutcome"
        assert MARKER.lower() not in response.text.lower()


def same_feedback_in_three_spellings_is_stored_once(served: Served) -> None:
    card = str(uuid.uuid4())
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-01-12T10:05:31Z"}
    for spelling in (
        item,
        {**item, "card": card.upper()},
        {**item, "outcomeTimestamp": "2026-01-12T10:05:31+00:00"},
    ):
        response = served.post(FEEDBACK, {"feedback": [spelling]})
        assert response.status_code == 200, response.text[:300]
    with sqlite3.connect(served.db_path) as connection:
        stored = connection.execute(
            "SELECT count(*) FROM feedback WHERE lower(card_uuid) = ?", (card,)
        ).fetchone()[0]
    assert stored == 1


ATTACKS: list[tuple[str, Callable[[Served], None]]] = [
    (
        "two slow clients holding their headers do not stop an honest hook call",
        slow_clients_do_not_stop_honest_calls(2),
    ),
    (
        "a hundred slow clients holding their headers do not stop an honest hook call",
        slow_clients_do_not_stop_honest_calls(100),
    ),
    (
        "a key server trickling its JWKS for two unknown kids does not hold the workers: 401 "
        "jwks-unavailable within the deadline, valid tokens still answered",
        jwks_trickle_does_not_hold_the_workers,
    ),
    (
        "an ES384 header naming an RSA key without alg is a counted 401, never a 500",
        refused_and_counted(naming_the_other_key_type("ES384", ec_key("attacker"), "rsa"), "alg"),
    ),
    (
        "an RS384 header naming an EC key without alg is a counted 401, never a 500",
        refused_and_counted(naming_the_other_key_type("RS384", rsa_key("attacker"), "ec"), "alg"),
    ),
    (
        "a signed token with iat NaN is a counted 401",
        refused_and_counted(time_claim("iat", "NaN"), "iat-invalid"),
    ),
    (
        "a signed token with nbf NaN is a counted 401",
        refused_and_counted(time_claim("nbf", "NaN"), "nbf-invalid"),
    ),
    (
        "a signed token with exp NaN is a counted 401, not a 500",
        refused_and_counted(time_claim("exp", "NaN"), "exp-invalid"),
    ),
    (
        "fhirServer = <allowed prefix>/../admin is a 412 and nothing leaves /fhir",
        fhir_path_escape(server=lambda base: f"{base}/../admin"),
    ),
    (
        "fhirServer = <allowed prefix>/%2e%2e/admin is a 412 and nothing leaves /fhir",
        fhir_path_escape(server=lambda base: f"{base}/%2e%2e/admin"),
    ),
    (
        "a next link /fhir/../admin is a 412 and never followed with the token",
        fhir_path_escape(next_link="/fhir/../admin"),
    ),
    (
        "a 4 MiB hookInstance is a 400 and grows neither the database nor the log",
        huge_hook_instance_fills_neither_disk_nor_log,
    ),
    (
        "a malformed header line carrying a JWT is in no log line",
        malformed_header_line_with_a_jwt_is_not_logged,
    ),
    (
        "a request line carrying a name, an MRN and a birth date is in no log line",
        request_line_with_patient_data_is_not_logged,
    ),
    (
        "the unverified iss of a refused token is logged bounded, not verbatim",
        unverified_iss_is_logged_bounded,
    ),
    ("a 405 names the allowed methods in Allow", method_not_allowed_names_allow),
    (
        "the HTTP server's own 431 is a JSON OperationOutcome with CORS, not HTML",
        oversized_header_is_json_with_cors,
    ),
    ("400 and 404 bodies do not repeat the sender's values", error_bodies_do_not_repeat_the_sender),
    (
        "the same feedback with an upper-case uuid or +00:00 is stored once",
        same_feedback_in_three_spellings_is_stored_once,
    ),
]


@pytest.mark.parametrize(("attack", "defended"), ATTACKS, ids=[a for a, _ in ATTACKS])
def test_the_attack_run_finds_nothing(
    served: Served, attack: str, defended: Callable[[Served], None]
) -> None:
    """Each finding of the attack run, against the shipped server: the defence holds."""
    defended(served)


def test_the_server_logged_no_error_and_no_traceback(served: Served) -> None:
    """After the table (defined above, so run before): no 500 was answered and nothing was logged at
    ERROR (the alg mismatch and exp NaN used to be 500s with tracebacks)."""
    records = [json.loads(line) for line in served.log_lines()]
    assert [r["message"] for r in records if r.get("level") in ("ERROR", "CRITICAL")] == []
    assert [r for r in records if r.get("status") == 500] == []
    assert records, "the log was captured"
