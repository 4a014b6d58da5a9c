"""What an EHR or a browser receives when the HTTP server refuses a request before the app sees
it (a malformed request line, an oversized or malformed header): a JSON OperationOutcome with
CORS headers, a fixed text that repeats nothing the sender sent, and the connection closed.

A real `cds-service serve` on 127.0.0.1 is sent the raw bytes (an HTTP client library would
refuse to send most of them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
from served import free_port, raw_exchange, stop, wait_until_serving

# Slow: a real server process per case; `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

SENDER_VALUE = "Jane-Doe-MRN-12345"
HOST = b"Host: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("served")
    port = free_port()
    env = {**os.environ, "CDS_DATABASE_URL": f"sqlite:///{folder}/db.sqlite3"}
    env.pop("CDS_CORS_ALLOWED_ORIGINS", None)  # the default: any origin
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "serve",
            "--no-auth",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}/healthz")
        yield port
    finally:
        stop(proc)


V = SENDER_VALUE.encode()
CASES = [
    pytest.param(
        V + b" " + V + b"\r\n" + HOST + b"\r\n",
        400,
        "structure",
        id="a garbage request line is a 400",
    ),
    pytest.param(
        b"GET /cds-services HTTP/9.9\r\n" + HOST + b"\r\n",
        400,
        "structure",
        id="an unknown HTTP version is a 400",
    ),
    pytest.param(
        b"GET /cds-services/" + V * 300 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        "too-long",
        id="a request line over 4094 bytes is a 414",
    ),
    pytest.param(
        b"GET /cds-services HTTP/1.1\r\n" + HOST + b"X-Big: " + V * 600 + b"\r\n\r\n",
        431,
        "too-long",
        id="a header line over 8190 bytes is a 431",
    ),
    pytest.param(
        b"GET /cds-services HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-H%d: %s\r\n" % (i, V) for i in range(101))
        + b"\r\n",
        431,
        "too-long",
        id="more than 100 header fields is a 431",
    ),
    pytest.param(
        b"GET /cds-services HTTP/1.1\r\n" + HOST + b"Authorization Bearer " + V + b"\r\n\r\n",
        400,
        "structure",
        id="a header line without a colon is a 400",
    ),
    pytest.param(
        b"POST /cds-services HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: " + V + b"\r\n\r\n",
        501,
        "not-supported",
        id="an unknown transfer coding is a 501",
    ),
]


@pytest.mark.parametrize(("payload", "status", "issue_code"), CASES)
def test_the_server_refuses_with_a_json_operation_outcome_and_cors(
    port: int, payload: bytes, status: int, issue_code: str
) -> None:
    got_status, headers, body = raw_exchange(port, payload)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    outcome = orjson.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert [issue["code"] for issue in outcome["issue"]] == [issue_code]
    assert SENDER_VALUE not in body.decode()


def test_an_honest_request_on_the_same_server_is_still_answered(port: int) -> None:
    """The refusals above close their own connections only."""
    status, headers, body = raw_exchange(
        port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    )
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
