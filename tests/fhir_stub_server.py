"""A real FHIR server stub on 127.0.0.1 serving the resources of a fixture request's prefetch.

Reusable by any test or benchmark:

    with FhirStub(request_json) as stub:          # or: base_url, stop = serve_fixture(request_json)
        request_json = without_prefetch(request_json, stub.base_url, stub.token)
        ...                                        # stub.requests records every call
                                                   # (as it arrives, before it is answered)

It answers `GET /fhir/Patient/<id>` and `GET /fhir/<Type>?patient=<id>` (Observation also with
`code=system|code,...` or `category=[system|]code,...`), pages search results by `_count` (or
`page_size`) with absolute `next` links, checks `Authorization: Bearer <token>`, and injects one
fault at a time (`fault=`):
"500", "401", "invalid-json", "operation-outcome", "slow" (sleeps `delay_seconds` longer than any
test deadline), "next-elsewhere" (search pages carry a `next` link to `next_elsewhere`), "html"
(a 200 HTML login page), "huge" (a valid Bundle padded to `huge_bytes`), "wrong-types" (a
searchset of Spaceship resources), "trickle" (headers, then one body byte every 50 ms, never
finishing), "reset" (headers and part of the body, then a TCP reset), "hang-up" (the connection
closed without any answer).
"""

from __future__ import annotations

import copy
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

FAULTS = (
    "500",
    "401",
    "invalid-json",
    "operation-outcome",
    "slow",
    "next-elsewhere",
    "html",
    "huge",
    "wrong-types",
    "trickle",
    "reset",
    "hang-up",
)
SOCKET_FAULTS = ("trickle", "reset", "hang-up")


@dataclass
class Recorded:
    """One request the stub received (the Authorization header as sent, for token assertions).

    Recorded when the request arrives, before any answer: once a client has its response, the
    request is in `stub.requests` (recording after answering let a test count before the last
    request was recorded: `assert 7 == 8` on a loaded machine)."""

    path: str
    query: dict[str, list[str]]
    authorization: str | None
    started: float
    finished: float | None = None
    """When the answer was ready, just before it was written; None while (or if never) ready."""


def _resources(request_json: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for value in (request_json.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or ():
                if isinstance(entry.get("resource"), dict):
                    yield entry["resource"]
        elif value.get("resourceType") != "OperationOutcome":
            yield value


def _refers_to(resource: dict[str, Any], patient_id: str) -> bool:
    for element in ("subject", "patient"):
        ref = resource.get(element)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            value = ref["reference"]
            return value in (f"Patient/{patient_id}", f"urn:uuid:{patient_id}") or value.endswith(
                f"/Patient/{patient_id}"
            )
    return False


def _has_code(resource: dict[str, Any], tokens: list[str]) -> bool:
    return _matches((resource.get("code") or {}).get("coding") or [], tokens)


def _has_category(resource: dict[str, Any], tokens: list[str]) -> bool:
    categories = resource.get("category") or []
    return _matches([c for cat in categories for c in (cat.get("coding") or [])], tokens)


def _matches(codings: list[dict[str, Any]], tokens: list[str]) -> bool:
    """A FHIR token search: any coding matches any `[system|]code` token."""
    for token in tokens:
        system, bar, code = token.rpartition("|")
        for coding in codings:
            if coding.get("code") == code and (not bar or coding.get("system") == system):
                return True
    return False


def _outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


class FhirStub:
    """A ThreadingHTTPServer on a free 127.0.0.1 port; start() / stop() or use as a context
    manager."""

    def __init__(
        self,
        request_json: dict[str, Any],
        *,
        token: str | None = "stub-token",
        delay_seconds: float = 0.0,
        page_size: int | None = None,
        fault: str | None = None,
        fault_types: tuple[str, ...] = (),
        next_elsewhere: str = "https://elsewhere.example.org/fhir",
        huge_bytes: int = 2_000_000,
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        self.token = token
        self.delay_seconds = delay_seconds
        self.page_size = page_size
        self.fault = fault
        self.fault_types = fault_types  # empty: every request; else only these resource types
        self.next_elsewhere = next_elsewhere.rstrip("/")
        self.huge_bytes = huge_bytes
        self.by_type: dict[str, list[dict[str, Any]]] = {}
        for resource in _resources(request_json):
            self.by_type.setdefault(resource["resourceType"], []).append(resource)
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # http.server's naming
                parts = urlsplit(self.path)
                record = Recorded(
                    parts.path,
                    parse_qs(parts.query),
                    self.headers.get("Authorization"),
                    time.monotonic(),
                )
                with stub._lock:
                    stub.requests.append(record)  # before answering (see Recorded)
                try:
                    if stub._socket_fault(self):
                        return
                    status, body, ctype = stub._answer(self.path, self.headers.get("Authorization"))
                    record.finished = time.monotonic()  # before the client can see the answer
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (deadline): expected in fault tests

            def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            # The service opens one connection per prefetch key at once; with the default backlog
            # of 5 a busy accept loop left the rest to TCP's SYN retry (1 s, 3 s, ...): a "missed
            # deadline" on a loaded machine that no real server would cause.
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up mid-answer is not a test failure

        self._server = Server(("127.0.0.1", 0), Handler)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in the "slow" fault
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FhirStub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observations for tests ---------------------------------------------------------------

    def max_concurrent(self) -> int:
        """The largest number of requests that were being answered at the same moment (one never
        answered counts until the end)."""
        with self._lock:
            requests = list(self.requests)
        events = sorted(
            [(r.started, 1) for r in requests]
            + [(math.inf if r.finished is None else r.finished, -1) for r in requests]
        )
        best = now = 0
        for _, step in events:
            now += step
            best = max(best, now)
        return best

    def first_page(
        self, resource_type: str, patient_id: str, page_size: int, **params: str
    ) -> dict[str, Any]:
        """A searchset's first page as this server pages it (for paginated-prefetch tests)."""
        query = {
            "patient": [patient_id],
            "_count": [str(page_size)],
            **{k: [v] for k, v in params.items()},
        }
        return self._search(resource_type, query)

    # -- answers ------------------------------------------------------------------------------

    def _socket_fault(self, handler: BaseHTTPRequestHandler) -> bool:
        """Misbehave at the TCP level for "trickle", "reset" and "hang-up"; True if it did."""
        resource_type = urlsplit(handler.path).path.removeprefix("/fhir").strip("/").split("/")[0]
        if self.fault not in SOCKET_FAULTS or (
            self.fault_types and resource_type not in self.fault_types
        ):
            return False
        handler.close_connection = True
        if self.fault == "hang-up":
            return True
        handler.send_response(200)
        handler.send_header("Content-Type", "application/fhir+json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b'{"resourceType": "Bundle", "type": "searchset", "entry": [')
        handler.wfile.flush()
        if self.fault == "reset":  # SO_LINGER 0: close() sends RST instead of FIN
            handler.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            return True
        while not self._stopping.wait(0.05):  # trickle: one byte at a time, never finishing
            handler.wfile.write(b" ")
            handler.wfile.flush()
        return True

    def _answer(self, raw_path: str, authorization: str | None) -> tuple[int, bytes, str]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        path = parts.path.removeprefix("/fhir").strip("/")
        resource_type = path.split("/", 1)[0]
        faulty = self.fault is not None and (
            not self.fault_types or resource_type in self.fault_types
        )
        if self.delay_seconds:
            self._stopping.wait(self.delay_seconds)
        if faulty and self.fault == "slow":
            self._stopping.wait(30)
        if self.token is not None and authorization != f"Bearer {self.token}":
            return self._json(401, _outcome("missing or wrong bearer token"))
        if faulty and self.fault == "401":
            return self._json(401, _outcome("token expired"))
        if faulty and self.fault == "500":
            return self._json(500, _outcome("internal error"))
        if faulty and self.fault == "invalid-json":
            return 200, b'{"resourceType": "Bundle", "entry": [', "application/fhir+json"
        if faulty and self.fault == "operation-outcome":
            return self._json(200, _outcome("search failed"))
        if faulty and self.fault == "html":
            return 200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html"
        if faulty and self.fault == "wrong-types":
            return self._json(
                200,
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [
                        {"resource": {"resourceType": "Spaceship", "id": str(i)}} for i in range(3)
                    ],
                },
            )
        if faulty and self.fault == "huge":
            padding = "x" * self.huge_bytes
            return self._json(
                200,
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "meta": {"tag": [{"code": padding}]},
                    "entry": [],
                },
            )
        if "/" in path:
            rtype, _, rid = path.partition("/")
            for resource in self.by_type.get(rtype, []):
                if resource.get("id") == rid:
                    return self._json(200, resource)
            return self._json(404, _outcome(f"{path} not found"))
        bundle = self._search(resource_type, query)
        if faulty and self.fault == "next-elsewhere":
            bundle["link"] = [
                {"relation": "next", "url": f"{self.next_elsewhere}/{resource_type}?{parts.query}"}
            ]
        return self._json(200, bundle)

    def _search(self, resource_type: str, query: dict[str, list[str]]) -> dict[str, Any]:
        patient = (query.get("patient") or [""])[0]
        matches = [r for r in self.by_type.get(resource_type, []) if _refers_to(r, patient)]
        if "code" in query:
            tokens = [t for value in query["code"] for t in value.split(",")]
            matches = [r for r in matches if _has_code(r, tokens)]
        if "category" in query:
            tokens = [t for value in query["category"] for t in value.split(",")]
            matches = [r for r in matches if _has_category(r, tokens)]
        count = int(query["_count"][0]) if "_count" in query else self.page_size
        offset = int((query.get("_offset") or ["0"])[0])
        page = matches[offset : offset + count] if count else matches
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [
                {
                    "fullUrl": f"{self.base_url}/{r['resourceType']}/{r.get('id')}",
                    "resource": copy.deepcopy(r),
                    "search": {"mode": "match"},
                }
                for r in page
            ],
        }
        if count and offset + count < len(matches):
            params = {k: v[0] for k, v in query.items() if k != "_offset"}
            params.update({"_count": str(count), "_offset": str(offset + count)})
            bundle["link"] = [
                {"relation": "next", "url": f"{self.base_url}/{resource_type}?{urlencode(params)}"}
            ]
        return bundle

    @staticmethod
    def _json(status: int, body: dict[str, Any]) -> tuple[int, bytes, str]:
        return status, json.dumps(body).encode(), "application/fhir+json"


def serve_fixture(
    request_json: dict[str, Any], delay_seconds: float = 0.0, **options: Any
) -> tuple[str, Callable[[], None]]:
    """Start a stub serving this request's prefetch; returns (base_url, stop)."""
    stub = FhirStub(request_json, delay_seconds=delay_seconds, **options)
    return stub.start(), stub.stop


def without_prefetch(
    request_json: dict[str, Any], base_url: str | None, token: str | None = "stub-token"
) -> dict[str, Any]:
    """The same hook request with no prefetch, pointing at base_url (None: no fhirServer)."""
    out = {
        k: v
        for k, v in request_json.items()
        if k not in ("prefetch", "fhirServer", "fhirAuthorization")
    }
    if base_url is not None:
        out["fhirServer"] = base_url
        if token is not None:
            out["fhirAuthorization"] = {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/*.read",
                "subject": "cds-service",
            }
    return out
