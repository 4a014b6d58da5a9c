"""The 127.0.0.1 servers the CDS Hooks Sandbox needs beside the service, for tests and by hand.

- `SandboxFhirServer`: a small open FHIR R4 server (CORS on, no token) holding one fixture patient:
  `GET /metadata`, `GET /{Type}/{id}`, and searches both as `GET /{Type}?...` and as the Sandbox
  sends its prefetch, `POST /{Type}/_search` with a form body. A search returns every resource of
  that type referring to the patient, filtered loosely by `code` and `category` tokens and ordered
  by `_sort` (date, newest first with `-date`); other parameters are ignored, and everything comes
  in one page, so the prefetch it answers is complete whatever the service's templates ask.
- `LemtradaPicker`: a test-only CDS service (two, one per hook, behind one discovery endpoint). The
  Sandbox's medication picker lists oral drugs only; this card's suggestion creates a Lemtrada
  (RxNorm 1594663) MedicationRequest, and taking it puts Lemtrada on the Sandbox's draft order.
  Once the draft order is Lemtrada it answers no cards.
- `StaticSite`: the prebuilt Sandbox (or any folder) as static files.

The FHIR server and the picker record each request *before* answering it, so a test never
counts early.

By hand (see docs/sandbox.md):

    python tests/sandbox_servers.py    # FHIR :8081, picker :8082, Sandbox :8083; prints the URL
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_DIR = ROOT.parent / "shared" / "cds-hooks-sandbox"
FIXTURE = "vzv_status_unknown"
"""Liz Conn (synthetic), relapsing MS, two prior DMTs, screening done except varicella (VZV)."""
LEMTRADA_RXNORM = "1594663"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LEMTRADA_NAME = "Lemtrada (alemtuzumab) 12 mg IV"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept",
    "Access-Control-Max-Age": "600",
}
DATE_ELEMENTS = (
    "effectiveDateTime",
    "issued",
    "occurrenceDateTime",
    "recordedDate",
    "onsetDateTime",
    "authoredOn",
    "dateAsserted",
)


@dataclass(frozen=True)
class Received:
    """One request a server received: method, path, query/form parameters and JSON body."""

    method: str
    path: str
    params: dict[str, list[str]]
    body: Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a browser closing a connection mid-answer is not an error here


class _Base:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0: a free one) run in a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        """The request handler class (or factory) for this server."""
        raise NotImplementedError

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def calls(self, method: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if method is None or r.method == method]

    def start(self) -> str:
        self._server = _Server(("127.0.0.1", self.port), self.handler())
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.origin

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _JsonHandler(BaseHTTPRequestHandler):
    """JSON answers with CORS headers; preflights answered 204."""

    protocol_version = "HTTP/1.1"

    def send_json(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in CORS_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_OPTIONS(self) -> None:  # http.server's naming
        self.send_response(204)
        for name, value in CORS_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        pass


# -- the FHIR server --------------------------------------------------------------------------


def fixture_resources(request_json: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource in a hook request's prefetch, once each (by type and id)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for value in (request_json.get("prefetch") or {}).values():
        if not isinstance(value, dict):
            continue
        entries = (
            [e.get("resource") for e in value.get("entry") or ()]
            if value.get("resourceType") == "Bundle"
            else [value]
        )
        for resource in entries:
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                seen.setdefault((resource["resourceType"], str(resource.get("id"))), resource)
    return list(seen.values())


def _refers_to(resource: dict[str, Any], patient_id: str) -> bool:
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient_id
    for element in ("subject", "patient"):
        reference = (resource.get(element) or {}).get("reference")
        if isinstance(reference, str):
            return (
                reference.rsplit("/", 1)[-1] == patient_id or reference == f"urn:uuid:{patient_id}"
            )
    return False


def _tokens(values: list[str]) -> list[tuple[str | None, str]]:
    """FHIR token parameters, `system|code` or `code`, comma-separated or repeated."""
    out: list[tuple[str | None, str]] = []
    for value in values:
        for token in value.split(","):
            system, bar, code = token.rpartition("|")
            out.append((system if bar else None, code))
    return out


def _matches(concepts: Iterable[Any], tokens: list[tuple[str | None, str]]) -> bool:
    for concept in concepts:
        for coding in (concept or {}).get("coding") or ():
            for system, code in tokens:
                if coding.get("code") == code and system in (None, "", coding.get("system")):
                    return True
    return False


def _date(resource: dict[str, Any]) -> str:
    for element in DATE_ELEMENTS:
        if isinstance(resource.get(element), str):
            return str(resource[element])
    period = resource.get("effectivePeriod") or {}
    return str(period.get("start") or "")


def search(
    resources: list[dict[str, Any]], resource_type: str, params: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """The resources a FHIR server would return for this search (loosely: see module docs)."""
    patient = (params.get("patient") or params.get("subject") or [""])[0]
    found = [
        r
        for r in resources
        if r["resourceType"] == resource_type
        and (not patient or _refers_to(r, patient.rsplit("/", 1)[-1]))
    ]
    if "code" in params:
        found = [r for r in found if _matches([r.get("code")], _tokens(params["code"]))]
    if "category" in params:
        tokens = _tokens(params["category"])
        found = [r for r in found if _matches(r.get("category") or (), tokens)]
    for key in reversed(",".join(params.get("_sort", [])).split(",")):
        if key.lstrip("-") == "date":
            found.sort(key=_date, reverse=key.startswith("-"))
    return found


class SandboxFhirServer(_Base):
    """An open FHIR R4 server at `<origin>/fhir` holding one patient's resources."""

    def __init__(self, request_json: dict[str, Any], port: int = 0) -> None:
        super().__init__(port)
        self.resources = fixture_resources(request_json)
        self.patient_id = str(request_json["context"]["patientId"])

    @property
    def base_url(self) -> str:
        return f"{self.origin}/fhir"

    def searched_types(self) -> set[str]:
        """The resource types the Sandbox prefetched with `POST {Type}/_search`."""
        return {r.path.split("/")[-2] for r in self.calls("POST") if r.path.endswith("/_search")}

    def capability_statement(self) -> dict[str, Any]:
        types = sorted({r["resourceType"] for r in self.resources})
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-01-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}]}
                        for t in types
                    ],
                }
            ],
        }

    def answer(
        self, method: str, path: str, params: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]]:
        parts = path.removeprefix("/fhir").strip("/").split("/")
        if method == "GET" and parts == ["metadata"]:
            return 200, self.capability_statement()
        if method == "GET" and len(parts) == 2:
            for resource in self.resources:
                if [resource["resourceType"], str(resource.get("id"))] == parts:
                    return 200, resource
            return 404, _outcome("not-found", f"{'/'.join(parts)} is not on this server")
        search_type = (
            parts[0]
            if (method == "GET" and len(parts) == 1)
            or (method == "POST" and len(parts) == 2 and parts[1] == "_search")
            else None
        )
        if not search_type:
            return 404, _outcome("not-supported", f"{method} {path} is not supported here")
        found = search(self.resources, search_type, params)
        return 200, {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"{self.base_url}/{r['resourceType']}/{r.get('id')}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in found
            ],
        }

    def handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        server = self

        class Handler(_JsonHandler):
            def do_GET(self) -> None:  # http.server's naming
                self._answer("GET", {})

            def do_POST(self) -> None:  # http.server's naming
                self._answer("POST", parse_qs(self.read_body().decode("utf-8", "replace")))

            def _answer(self, method: str, form: dict[str, list[str]]) -> None:
                parts = urlsplit(self.path)
                params = {**parse_qs(parts.query), **form}
                server.record(Received(method, parts.path, params, None))
                status, body = server.answer(method, parts.path, params)
                self.send_json(status, body, "application/fhir+json")

        return Handler


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


# -- the test-only CDS service that puts Lemtrada on the draft order ---------------------------


PICKER_SERVICES = {
    "lemtrada-picker-order-select": "order-select",
    "lemtrada-picker-order-sign": "order-sign",
}


def _orders_lemtrada(request_json: Any) -> bool:
    draft_orders = ((request_json or {}).get("context") or {}).get("draftOrders") or {}
    for entry in draft_orders.get("entry") or ():
        concept = (entry.get("resource") or {}).get("medicationCodeableConcept") or {}
        if any(c.get("code") == LEMTRADA_RXNORM for c in concept.get("coding") or ()):
            return True
    return False


def picker_card(patient_id: str) -> dict[str, Any]:
    """A card whose one suggestion creates a Lemtrada MedicationRequest for the patient."""
    return {
        "uuid": "8a5b0e2c-3f1d-4c6a-9e7b-1d2c3b4a5f60",
        "summary": "Test helper: put Lemtrada on the draft order",
        "indicator": "info",
        "detail": "The Sandbox lists oral drugs only. Not part of the Lemtrada service.",
        "source": {"label": "Sandbox test helper"},
        "suggestions": [
            {
                "label": f"Order {LEMTRADA_NAME}",
                "uuid": "4c1f7d9e-2b3a-4e5f-8a6b-7c8d9e0f1a2b",
                "actions": [
                    {
                        "type": "create",
                        "description": (
                            f"Put {LEMTRADA_NAME} (RxNorm {LEMTRADA_RXNORM}) on the order"
                        ),
                        "resource": {
                            "resourceType": "MedicationRequest",
                            "status": "draft",
                            "intent": "order",
                            "subject": {"reference": f"Patient/{patient_id}"},
                            "medicationCodeableConcept": {
                                "text": LEMTRADA_NAME,
                                "coding": [
                                    {
                                        "system": RXNORM,
                                        "code": LEMTRADA_RXNORM,
                                        "display": "1.2 ML alemtuzumab 10 MG/ML Injection "
                                        "[Lemtrada]",
                                    }
                                ],
                            },
                        },
                    }
                ],
            }
        ],
    }


class LemtradaPicker(_Base):
    """Discovery at `<origin>/cds-services`: one picker service per hook, no authentication."""

    @property
    def discovery_url(self) -> str:
        return f"{self.origin}/cds-services"

    def answer(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["cds-services"]:
            return 200, {
                "services": [
                    {
                        "hook": hook,
                        "id": service_id,
                        "title": f"Test only: put Lemtrada on the draft order ({hook})",
                        "description": (
                            "Offers a suggestion that puts Lemtrada on the Sandbox's draft "
                            "order (its picker lists oral drugs only)."
                        ),
                    }
                    for service_id, hook in PICKER_SERVICES.items()
                ]
            }
        if method == "POST" and len(parts) == 3 and parts[2] == "feedback":
            return 200, {}
        if method == "POST" and len(parts) == 2 and parts[1] in PICKER_SERVICES:
            if _orders_lemtrada(body):
                return 200, {"cards": []}
            patient_id = str(((body or {}).get("context") or {}).get("patientId") or "")
            return 200, {"cards": [picker_card(patient_id)]}
        return 404, _outcome("not-found", f"{method} {path}")

    def handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        server = self

        class Handler(_JsonHandler):
            def do_GET(self) -> None:  # http.server's naming
                self._answer("GET", None)

            def do_POST(self) -> None:  # http.server's naming
                try:
                    body = json.loads(self.read_body() or b"null")
                except ValueError:
                    body = None
                self._answer("POST", body)

            def _answer(self, method: str, body: Any) -> None:
                path = urlsplit(self.path).path
                server.record(Received(method, path, {}, body))
                self.send_json(*server.answer(method, path, body))

        return Handler


# -- the Sandbox itself, as static files ------------------------------------------------------


class StaticSite(_Base):
    """A folder served as static files (the prebuilt Sandbox is nothing else)."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        super().__init__(port)
        self.directory = directory

    def handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
                pass

        return partial(Handler, directory=str(self.directory))


SCREENS = {"rx-view": "order-select", "rx-sign": "order-sign", "patient-view": "patient-view"}


def sandbox_url(
    sandbox: str, fhir_base_url: str, patient_id: str, discovery_urls: list[str], screen: str
) -> str:
    """The Sandbox page for a screen, wired to the FHIR server and the CDS services.

    (Its `prescribedMedicationStartDate` parameter is lost when the patient loads: the planned
    start has to be typed into the Start Date field.)"""
    return f"{sandbox}/?" + urlencode(
        {
            "fhirServiceUrl": fhir_base_url,
            "patientId": patient_id,
            "serviceDiscoveryURL": ",".join(discovery_urls),
            "hook": SCREENS[screen],
            "screen": screen,
        },
        safe=":/,",
    )


def main(argv: list[str] | None = None) -> int:
    """Serve the FHIR server, the picker and the Sandbox until interrupted; print the URL."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--fixture",
        default=FIXTURE,
        help="request in fhir_fixtures/requests/ whose patient to serve",
    )
    parser.add_argument("--fhir-port", type=int, default=8081)
    parser.add_argument("--picker-port", type=int, default=8082)
    parser.add_argument("--sandbox-port", type=int, default=8083)
    parser.add_argument("--sandbox-dir", type=Path, default=SANDBOX_DIR)
    parser.add_argument(
        "--screen",
        choices=sorted(SCREENS),
        default="rx-view",
        help="the Sandbox screen of the printed URL (patient-view: the monitoring service)",
    )
    parser.add_argument(
        "--service",
        default="http://127.0.0.1:8080",
        help="the Lemtrada service's base URL (for the printed Sandbox URL)",
    )
    args = parser.parse_args(argv)
    request_json = json.loads(
        (ROOT / "fhir_fixtures" / "requests" / f"{args.fixture}.json").read_text(encoding="utf-8")
    )
    fhir = SandboxFhirServer(request_json, args.fhir_port)
    picker = LemtradaPicker(args.picker_port)
    sandbox = StaticSite(args.sandbox_dir, args.sandbox_port)
    servers: list[_Base] = [fhir, picker, sandbox]
    for server in servers:
        server.start()
    discovery = [f"{args.service.rstrip('/')}/cds-services", picker.discovery_url]
    print(
        f"FHIR server:      {fhir.base_url} (patient {fhir.patient_id})\n"
        f"Picker discovery: {picker.discovery_url}\n"
        f"Sandbox:          {sandbox.origin}\nOpen:\n"
        f"{sandbox_url(sandbox.origin, fhir.base_url, fhir.patient_id, discovery, args.screen)}",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
