"""CORS: the headers on every response (test client), and proof in a real browser (Chromium).

The browser tests start the real service (`cds-service serve --no-auth`) on 127.0.0.1:P and two
static sites on 127.0.0.1:A and 127.0.0.1:B (other origins). A page on a site calls discovery and a
service with an `Authorization` header (so the browser sends a preflight) and writes what it got
into the DOM. They need Debian's `/usr/bin/chromium` and the `playwright` module (no Playwright
browser download) and are skipped when either is absent.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from browser import launch_chromium, why_no_chromium
from flask.testing import FlaskClient
from served import free_port

from cds_service.app import create_app
from cds_service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
REQUEST = ROOT / "fhir_fixtures" / "requests" / "eligible_patient_at_order_select.json"
EHR = "https://ehr.example.org"
OTHER = "https://evil.example.net"
SERVICE = "/cds-services/lemtrada-order-select"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


# -- headers, through the test client ---------------------------------------------------------


def make_client(tmp_path: Path, origins: tuple[str, ...], auth: bool = False) -> FlaskClient:
    settings = Settings.from_env(
        database_url=f"sqlite:///{tmp_path}/t.sqlite3",
        cors_allowed_origins=origins,
        auth_disabled=not auth,
        trusted_issuers_file="",
        trusted_issuers_json="",
    )
    return create_app(settings).test_client()


@pytest.mark.parametrize(
    ("origins", "origin", "allow_origin"),
    [
        pytest.param(("*",), EHR, "*", id="any origin is allowed by default, with a wildcard"),
        pytest.param((EHR,), EHR, EHR, id="a listed origin is echoed back"),
        pytest.param(
            (EHR, "https://other-ehr.example.org"),
            "https://other-ehr.example.org",
            "https://other-ehr.example.org",
            id="any of several listed origins is echoed",
        ),
        pytest.param((EHR,), OTHER, None, id="an origin that is not listed gets no allow-origin"),
    ],
)
def test_preflight_answers_with_the_allowed_origin_methods_and_headers(
    tmp_path: Path, origins: tuple[str, ...], origin: str, allow_origin: str | None
) -> None:
    """OPTIONS is answered 204; the Access-Control-* headers appear only for an allowed origin."""
    client = make_client(tmp_path, origins)
    response = client.options(SERVICE, headers={"Origin": origin, **PREFLIGHT})
    assert response.status_code == 204
    assert response.headers.get("Access-Control-Allow-Origin") == allow_origin
    assert "Origin" in response.headers.get("Vary", "")
    if allow_origin is None:
        assert "Access-Control-Allow-Methods" not in response.headers
    else:
        assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
        assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
        assert int(response.headers["Access-Control-Max-Age"]) > 0
        assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("GET", "/cds-services", None, 200, id="discovery"),
        pytest.param("POST", SERVICE, json.loads(REQUEST.read_text()), 200, id="a service call"),
        pytest.param("POST", SERVICE, {"hook": "order-select"}, 400, id="a bad request error"),
        pytest.param("POST", "/cds-services/no-such-service", {}, 404, id="an unknown service"),
        pytest.param("POST", SERVICE + "/feedback", {"feedback": []}, 400, id="a feedback error"),
        pytest.param("GET", SERVICE, None, 405, id="a method the endpoint does not support"),
    ],
)
def test_every_response_carries_cors_headers_errors_included(
    tmp_path: Path, method: str, path: str, body: Any, status: int
) -> None:
    """A browser can read errors too: every answer names the allowed origin and varies on it."""
    client = make_client(tmp_path, (EHR,))
    response = client.open(path, method=method, json=body, headers={"Origin": EHR})
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == EHR
    assert "Origin" in response.headers["Vary"]


def test_preflight_needs_no_token_while_the_call_itself_does(tmp_path: Path) -> None:
    """With authentication on, OPTIONS passes without a JWT and the 401 still carries CORS."""
    client = make_client(tmp_path, (EHR,), auth=True)
    preflight = client.options(SERVICE, headers={"Origin": EHR, **PREFLIGHT})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == EHR
    call = client.post(SERVICE, json=json.loads(REQUEST.read_text()), headers={"Origin": EHR})
    assert call.status_code == 401
    assert call.headers["Access-Control-Allow-Origin"] == EHR


# -- a real browser -------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>EHR page</title></head>
<body><pre id="out"></pre>
<script>
const api = new URLSearchParams(location.search).get("api");
async function call(url, init) {
  try {
    const response = await fetch(url, init);
    const body = await response.json();
    return {status: response.status, services: (body.services || []).map(s => s.id),
            cards: (body.cards || []).length};
  } catch (error) {
    return {error: String(error)};
  }
}
(async () => {
  const request = await (await fetch("request.json")).json();
  const discovery = await call(api + "/cds-services");
  const service = await call(api + "/cds-services/lemtrada-order-select", {
    method: "POST",
    headers: {"Authorization": "Bearer test", "Content-Type": "application/json"},
    body: JSON.stringify(request),
  });
  const out = document.getElementById("out");
  out.textContent = JSON.stringify({discovery, service});
  out.dataset.done = "1";
})();
</script></body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        pass


@dataclass
class Site:
    """A static site on its own origin, serving the EHR page and the hook request it posts."""

    server: http.server.ThreadingHTTPServer
    thread: threading.Thread

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def start_site(directory: Path) -> Site:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Site(server, thread)


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str


def start_service(tmp: Path, allowed_origins: str | None) -> Service:
    """`cds-service serve --no-auth` on a free port, waited for until discovery answers."""
    port = free_port()
    env = {**os.environ, "CDS_DATABASE_URL": f"sqlite:///{tmp}/service.sqlite3"}
    env.pop("CDS_CORS_ALLOWED_ORIGINS", None)
    if allowed_origins is not None:
        env["CDS_CORS_ALLOWED_ORIGINS"] = allowed_origins
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "serve",
            "--no-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/cds-services", timeout=2) as response:
                if response.status == 200:
                    return Service(process, url)
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_service(Service(process, url))
            raise RuntimeError(
                "the service did not start: "
                + (process.stderr.read().decode() if process.stderr else "")
            )
        time.sleep(0.1)


def stop_service(service: Service) -> None:
    service.process.terminate()
    try:
        service.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
    if service.process.stderr:
        service.process.stderr.close()


@dataclass
class Setup:
    allowed_site: Site
    other_site: Site
    strict: Service
    """Allows only allowed_site's origin."""
    open: Service
    """Default settings: any origin."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    missing = why_no_chromium()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("cors")
    sites = []
    for name in ("allowed", "other"):
        directory = root / name
        directory.mkdir()
        (directory / "index.html").write_text(PAGE, encoding="utf-8")
        shutil.copy(REQUEST, directory / "request.json")
        sites.append(start_site(directory))
    services: list[Service] = []
    try:
        services.append(start_service(root, sites[0].origin))
        services.append(start_service(root, None))
        yield Setup(sites[0], sites[1], services[0], services[1])
    finally:
        for service in services:
            stop_service(service)
        for site in sites:
            site.server.shutdown()
            site.server.server_close()
            site.thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(setup: Setup) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def run_page(browser: Any, site: Site, service: Service) -> tuple[dict[str, Any], list[str]]:
    """Load the EHR page from `site`, let it call `service`, return its results and console."""
    page = browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        page.goto(f"{site.origin}/index.html?api={service.url}")
        page.wait_for_selector("#out[data-done]", timeout=30_000)
        return json.loads(page.text_content("#out") or "{}"), console
    finally:
        page.close()


@pytest.mark.browser
def test_a_page_on_an_allowed_origin_calls_discovery_and_a_service_with_a_token(
    setup: Setup, browser: Any
) -> None:
    """From the allowed origin, Chromium reads discovery and the cards of an authorised POST."""
    result, console = run_page(browser, setup.allowed_site, setup.strict)
    assert result["discovery"] == {
        "status": 200,
        "services": ["lemtrada-order-select", "lemtrada-order-sign", "lemtrada-monitoring"],
        "cards": 0,
    }, console
    assert result["service"]["status"] == 200, (result, console)
    assert result["service"]["cards"] >= 1


@pytest.mark.browser
def test_a_page_on_another_origin_is_blocked_by_the_browser(setup: Setup, browser: Any) -> None:
    """When only one origin is allowed, Chromium refuses both calls from any other origin."""
    result, console = run_page(browser, setup.other_site, setup.strict)
    assert "error" in result["discovery"] and "error" in result["service"], result
    assert any("blocked by CORS policy" in line for line in console), console


@pytest.mark.browser
def test_by_default_a_page_on_any_origin_gets_its_cards(setup: Setup, browser: Any) -> None:
    """With the default setting (`*`), the same page on another origin succeeds."""
    result, console = run_page(browser, setup.other_site, setup.open)
    assert result["discovery"]["status"] == 200, (result, console)
    assert result["service"]["status"] == 200 and result["service"]["cards"] >= 1, result


OVERSIZED_CALL = """async (api) => {
  try {
    const response = await fetch(api + "/cds-services", {
      headers: {"Authorization": "Bearer " + "a".repeat(9000)}});
    const body = await response.json();
    return {status: response.status, resourceType: body.resourceType,
            codes: body.issue.map(issue => issue.code)};
  } catch (error) {
    return {error: String(error)};
  }
}"""


@pytest.mark.browser
def test_a_header_too_large_for_the_server_reaches_the_page_as_a_431_operation_outcome(
    setup: Setup, browser: Any
) -> None:
    """gunicorn refuses an 8 KB+ header line before the app; with any origin allowed, the page
    still reads the status and the OperationOutcome (the refusal carries CORS headers)."""
    page = browser.new_page()
    try:
        page.goto(f"{setup.other_site.origin}/index.html?api={setup.open.url}")
        result = page.evaluate(OVERSIZED_CALL, setup.open.url)
    finally:
        page.close()
    assert result == {"status": 431, "resourceType": "OperationOutcome", "codes": ["too-long"]}


@pytest.mark.browser
def test_with_listed_origins_a_refusal_before_the_headers_are_read_is_a_network_error(
    setup: Setup, browser: Any
) -> None:
    """The documented limit: the server cannot know the Origin of a request it refused before
    reading its headers, so with a list of origins the browser sees no allowed origin."""
    page = browser.new_page()
    try:
        page.goto(f"{setup.allowed_site.origin}/index.html?api={setup.strict.url}")
        result = page.evaluate(OVERSIZED_CALL, setup.strict.url)
    finally:
        page.close()
    assert "error" in result, result
