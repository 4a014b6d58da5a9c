"""Slow clients do not starve honest ones, and honest clients keep their connections alive.

A real `cds-service serve` (2 workers, as shipped) on 127.0.0.1 faces 100 connections that send
a request header one byte every 0.5 s and never finish it (reopened whenever the server closes
them). Every honest call made meanwhile must be answered within a generous deadline. Before the
server moved to gevent workers, two such connections held both sync workers and 0 of 20 honest
calls were answered in 40 s.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fhir_stub_server import FhirStub, without_prefetch
from served import free_port, stop, wait_until_serving
from slow_clients import SlowClients, honest_calls

# Slow: real gunicorn servers and deliberately slow sockets;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REQUEST = ROOT / "fhir_fixtures" / "requests" / "eligible_patient_at_order_select.json"
SELECT = "/cds-services/lemtrada-order-select"
DEADLINE = 10.0  # seconds per honest call: generous, warm calls take milliseconds
KEEPALIVE = 5  # the shipped default (CDS_KEEPALIVE_SECONDS)


FHIR_DEADLINE = 2.0


@pytest.fixture(scope="module")
def fhir_servers() -> Iterator[tuple[FhirStub, FhirStub]]:
    """A FHIR server answering each request after 0.2 s, and one stalled for 30 s."""
    request = orjson.loads(REQUEST.read_bytes())
    with (
        FhirStub(request, delay_seconds=0.2) as answering,
        FhirStub(request, delay_seconds=30.0) as stalled,
    ):
        yield answering, stalled


@pytest.fixture(scope="module")
def port(
    tmp_path_factory: pytest.TempPathFactory, fhir_servers: tuple[FhirStub, FhirStub]
) -> Iterator[int]:
    """`cds-service serve --no-auth` with its defaults (2 workers), from a temporary folder,
    allowed to fetch from the two FHIR stubs."""
    folder = tmp_path_factory.mktemp("served")
    port = free_port()
    log = (folder / "server.log").open("wb")
    env = {
        **os.environ,
        "CDS_DATABASE_URL": f"sqlite:///{folder}/db.sqlite3",
        "CDS_FHIR_SERVER_ALLOWLIST": ",".join(s.base_url for s in fhir_servers),
        "CDS_HTTP_ALLOWED_HOSTS": "127.0.0.1",
        "CDS_FHIR_DEADLINE_SECONDS": str(FHIR_DEADLINE),
    }
    for name in ("CDS_WORKERS", "CDS_KEEPALIVE_SECONDS", "CDS_WORKER_CONNECTIONS"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--no-auth", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_until_serving(
            proc,
            f"http://127.0.0.1:{port}/readyz",
            why_exited=lambda: (folder / "server.log").read_text()[-2000:],
        )
        yield port
    finally:
        stop(proc)
        log.close()


def answered_with_cards(status: int, body: bytes) -> bool:
    return status == 200 and "cards" in orjson.loads(body)


def test_100_slow_clients_do_not_stop_20_hook_calls_and_health_checks(port: int) -> None:
    """With 100 connections trickling their headers, every hook call and /healthz is answered
    within the deadline (each on a new connection, 4 at a time)."""
    body = REQUEST.read_bytes()
    hook_calls = honest_calls(
        port, [("POST", SELECT, body)] * 20, DEADLINE, check=answered_with_cards
    )
    assert hook_calls.failures == [], "the server does not answer even without slow clients"
    with SlowClients(port, count=100, interval=0.5, max_seconds=90) as attack:
        assert attack.open_now == 100
        hook_calls = honest_calls(
            port, [("POST", SELECT, body)] * 20, DEADLINE, check=answered_with_cards
        )
        health = honest_calls(port, [("GET", "/healthz", None)] * 5, DEADLINE)
    assert hook_calls.failures == [] and hook_calls.answered == 20
    assert health.failures == [] and health.answered == 5


def test_a_header_never_finished_is_closed_after_the_keepalive_timeout(port: int) -> None:
    """The time to send a request's headers is bounded: the server closes a connection that is
    still sending them after the keep-alive timeout, without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=KEEPALIVE + 15) as sock:
        sock.sendall(b"POST " + SELECT.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server (a timeout here fails the test)
        assert time.monotonic() - started < KEEPALIVE + 15


def test_an_honest_client_keeps_its_connection_alive_across_calls(port: int) -> None:
    """Three calls on one connection: the server keeps it open (no new TCP handshake per call),
    as an EHR's HTTP client expects."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        sockets = []
        for method, path, body in [
            ("GET", "/cds-services", None),
            ("POST", SELECT, REQUEST.read_bytes()),
            ("GET", "/healthz", None),
        ]:
            conn.request(
                method,
                path,
                body=body,
                headers={"Content-Type": "application/json"} if body else {},
            )
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            assert response.getheader("Connection", "").lower() != "close"
            sockets.append(conn.sock)
        assert sockets[0] is not None and all(s is sockets[0] for s in sockets)
    finally:
        conn.close()


def post_json(port: int, doc: object) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE + FHIR_DEADLINE)
    try:
        conn.request(
            "POST", SELECT, body=orjson.dumps(doc), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def test_the_fhir_fallback_fetches_concurrently_inside_a_gevent_worker(
    port: int, fhir_servers: tuple[FhirStub, FhirStub]
) -> None:
    """With no prefetch, the keys are fetched from the FHIR server at the same time (the FHIR
    client's thread pool runs as greenlets) and the cards are built from them."""
    answering, _ = fhir_servers
    status, body = post_json(
        port, without_prefetch(orjson.loads(REQUEST.read_bytes()), answering.base_url)
    )
    assert status == 200, body
    assert body["cards"]
    assert answering.max_concurrent() > 1


def test_a_stalled_fhir_server_costs_its_own_calls_the_deadline_and_no_one_else_anything(
    port: int, fhir_servers: tuple[FhirStub, FhirStub]
) -> None:
    """Four hook calls (two per worker) whose FHIR server never answers each get a 412 at the
    FHIR deadline; health checks sent while they wait are answered before any of them (with
    sync workers they queued behind the stalled calls)."""
    _, stalled = fhir_servers
    finished: list[tuple[int, float, float]] = []  # status, seconds taken, when it finished
    lock = threading.Lock()

    def stalled_call() -> None:
        started = time.monotonic()
        status, _ = post_json(
            port, without_prefetch(orjson.loads(REQUEST.read_bytes()), stalled.base_url)
        )
        with lock:
            finished.append((status, time.monotonic() - started, time.monotonic()))

    callers = [threading.Thread(target=stalled_call) for _ in range(4)]
    for caller in callers:
        caller.start()
    time.sleep(0.5)  # the calls are in the workers, waiting for the FHIR server
    health = honest_calls(port, [("GET", "/healthz", None)] * 4, DEADLINE, parallel=1)
    health_done = time.monotonic()
    for caller in callers:
        caller.join(timeout=DEADLINE + FHIR_DEADLINE)
    assert health.failures == [] and health.answered == 4
    assert [status for status, _, _ in finished] == [412] * 4
    assert all(seconds < FHIR_DEADLINE + DEADLINE for _, seconds, _ in finished)
    assert health_done < min(when for _, _, when in finished)


def test_serve_refuses_a_keepalive_of_zero_which_would_unbound_the_header_read(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "serve",
            "--no-auth",
            "--keepalive",
            "0",
            "--port",
            str(free_port()),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "keep-alive timeout" in result.stderr
