"""A minimal FHIR terminology server on 127.0.0.1, run as its own process by the tests.

    python tests/terminology_stub_server.py --port 8099 [--fault hang|trickle|garbage|500]

It knows a handful of SNOMED CT concepts (HIERARCHY: each root with the concepts under it) and
answers `GET /fhir/CodeSystem/$subsumes?system=...&codeA=<root>&codeB=<code>` with a Parameters
resource whose `outcome` is `equivalent`, `subsumes` (codeB is under codeA), `subsumed-by` or
`not-subsumed`. `GET /fhir/metadata` answers a CapabilityStatement (readiness), `GET /_calls` the
$subsumes queries received so far (recorded as they arrive, before any answer; never counted
themselves). A fault applies to $subsumes only: "hang" (never answers), "trickle" (headers, then
one body byte every 50 ms, never finishing), "garbage" (200 with a body that is not FHIR), "500".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SNOMED = "http://snomed.info/sct"
HIERARCHY: dict[str, frozenset[str]] = {
    # Malignant neoplastic disease: non-small cell lung cancer, malignant neoplasm of breast,
    # NSCLC TNM stage 1 (as Synthea codes them).
    "363346000": frozenset({"254637007", "254837009", "424132000"}),
    # Disorder of thyroid gland: hypothyroidism, hyperthyroidism.
    "14304000": frozenset({"40930008", "34486009"}),
    # Infectious disease: sepsis, pneumonia (infective).
    "40733004": frozenset({"91302008", "233604007"}),
}
"""Root -> the concepts it subsumes (a toy excerpt of SNOMED CT, enough for the tests). Anything
else, such as 38341003 hypertensive disorder or 44054006 type 2 diabetes, is subsumed by none."""
FAULTS = ("hang", "trickle", "garbage", "500")


def outcome(code_a: str, code_b: str) -> str:
    if code_a == code_b:
        return "equivalent"
    if code_b in HIERARCHY.get(code_a, frozenset()):
        return "subsumes"
    if code_a in HIERARCHY.get(code_b, frozenset()):
        return "subsumed-by"
    return "not-subsumed"


def make_server(port: int, fault: str | None) -> ThreadingHTTPServer:
    calls: list[dict[str, str]] = []
    lock = threading.Lock()
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def send_json(self, status: int, body: Any, ctype: str = "application/fhir+json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # http.server's naming
            parts = urlsplit(self.path)
            if parts.path == "/_calls":
                with lock:
                    self.send_json(200, list(calls), "application/json")
                return
            if parts.path == "/fhir/metadata":
                self.send_json(200, {"resourceType": "CapabilityStatement", "status": "active"})
                return
            if parts.path != "/fhir/CodeSystem/$subsumes":
                self.send_json(404, {"resourceType": "OperationOutcome", "issue": []})
                return
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            with lock:
                calls.append(query)  # before answering: a client with its answer sees it counted
            with contextlib.suppress(OSError):  # the client gave up at its deadline
                self.answer_subsumes(query)

        def answer_subsumes(self, query: dict[str, str]) -> None:
            if fault == "hang":
                self.close_connection = True
                stopping.wait(60)
                return
            if fault == "trickle":
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b'{"resourceType": "Parameters", "parameter": [')
                self.wfile.flush()
                for _ in range(1200):  # a minute at most
                    if stopping.wait(0.05):
                        return
                    self.wfile.write(b" ")
                    self.wfile.flush()
                return
            if fault == "garbage":
                self.send_json(200, b"<html>Please log in</html>", "text/html")
                return
            if fault == "500":
                self.send_json(500, {"resourceType": "OperationOutcome", "issue": []})
                return
            if query.get("system") != SNOMED or not query.get("codeA") or not query.get("codeB"):
                self.send_json(400, {"resourceType": "OperationOutcome", "issue": []})
                return
            self.send_json(
                200,
                {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "outcome", "valueCode": outcome(query["codeA"], query["codeB"])}
                    ],
                },
            )

        def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client hanging up mid-answer is not an error here

    return Server(("127.0.0.1", port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", choices=FAULTS)
    args = parser.parse_args()
    make_server(args.port, args.fault).serve_forever(poll_interval=0.05)  # until SIGTERM


if __name__ == "__main__":
    main()
