"""The FHIR allow-list cannot be escaped with path tricks (issue 11, item 4).

`requests` resolves `..` before sending and servers decode `%2e%2e`, so a text prefix check let
`<allowed>/../admin` (as fhirServer or as a `next` link) carry the EHR's bearer token to /admin.
Every URL is now parsed, percent-decoded once, refused when it holds dot segments, encoded
slashes, doubled slashes, backslashes or credentials, and compared by path segments. Each case
runs against a real FHIR stub on 127.0.0.1 that records every path it receives, and asserts that
nothing reached a path outside /fhir (so the token never went there).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from fhir_stub_server import FhirStub, without_prefetch
from fixture_requests import fixture_request

from cds_service.services import prefetch_templates

# Slow: a real FHIR stub server on 127.0.0.1 per case, paged;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

URL = "/cds-services/lemtrada-order-select"
TOKEN = "stub-token"
ALL_KEYS = sorted(f"prefetch.{k}" for k in prefetch_templates())
OBSERVATION_KEYS = sum(1 for t in prefetch_templates().values() if t.startswith("Observation?"))
"""Each Observation key is at most one search of /fhir/Observation; a followed next adds one."""


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """A test client of an app allow-listing the given prefixes over plain http on 127.0.0.1."""
    from cds_service.app import create_app

    apps: list[Any] = []

    def make(*allowed: str) -> Any:
        app = create_app(
            testing=True,
            fhir_server_allowlist=allowed,
            http_allowed_hosts=("127.0.0.1",),
            fhir_deadline_seconds=3.0,
        )
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["cds_fetcher"].session.close()


def stays_under_fhir(path: str) -> bool:
    """What the stub received is a plain path under /fhir (decoded, no dot or empty segment)."""
    segments = unquote(path).split("/")
    return (
        segments[:2] == ["", "fhir"]
        and "\\" not in path
        and not any(s in ("", ".", "..") for s in segments[1:])
    )


def assert_nothing_left_fhir(stub: FhirStub) -> None:
    strays = [r.path for r in stub.requests if not stays_under_fhir(r.path)]
    assert strays == [], "requests reached a path outside /fhir"
    tokens_elsewhere = [
        r.path for r in stub.requests if r.authorization and not stays_under_fhir(r.path)
    ]
    assert tokens_elsewhere == []


def port_of(base: str) -> int:
    port = urlsplit(base).port
    assert port is not None
    return port


SERVER_ESCAPES = [
    ("a dot-dot segment after the allowed prefix", lambda b: f"{b}/../admin", "dot segment"),
    ("a single-dot segment", lambda b: f"{b}/./admin", "dot segment"),
    ("a percent-encoded dot-dot in lower case", lambda b: f"{b}/%2e%2e/admin", "dot segment"),
    ("a percent-encoded dot-dot in upper case", lambda b: f"{b}/%2E%2E/admin", "dot segment"),
    ("a dot-dot with a Tomcat path parameter", lambda b: f"{b}/..;x=1/admin", "dot segment"),
    ("a double-encoded dot-dot", lambda b: f"{b}/%252e%252e/admin", "double-encoded"),
    ("an encoded slash inside a segment", lambda b: f"{b}/%2f..%2fadmin", "encoded slash"),
    ("a doubled slash", lambda b: f"{b}//admin", "doubled slash"),
    ("backslashes", lambda b: f"{b}/..\\admin", "backslash"),
    (
        "the allowed host and port as userinfo before another host",
        lambda b: f"http://127.0.0.1:{port_of(b)}@localhost:{port_of(b)}/fhir",
        "credentials",
    ),
    ("a query after the base URL", lambda b: f"{b}?_format=json", "query"),
]


@pytest.mark.parametrize(
    ("case", "server", "problem"), SERVER_ESCAPES, ids=[c for c, _, _ in SERVER_ESCAPES]
)
def test_fhir_server_that_escapes_the_allow_list_is_a_412_and_never_called(
    stubs, make_client, case, server, problem
):
    """A fhirServer with a path trick is refused before any connection: 412 naming every key,
    saying what is wrong without repeating the URL; the stub receives nothing."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    client = make_client(stub.base_url)
    response = client.post(URL, json=without_prefetch(full, server(stub.base_url), TOKEN))
    assert response.status_code == 412, response.get_data(as_text=True)[:500]
    issue = response.get_json()["issue"][0]
    assert sorted(issue["expression"]) == ALL_KEYS
    assert "fhirServer" in issue["diagnostics"] and problem in issue["diagnostics"]
    assert "admin" not in response.get_data(as_text=True)
    assert stub.requests == []


NEXT_ESCAPES = [
    ("an absolute link with a dot-dot segment", lambda b: f"{b}/../admin"),
    ("an absolute-path link with a dot-dot segment", lambda b: "/fhir/../admin"),
    ("a relative link climbing out of fhir", lambda b: "../admin"),
    ("a link with a single-dot segment", lambda b: f"{b}/./admin"),
    ("a link with a lower-case encoded dot-dot", lambda b: f"{b}/%2e%2e/admin"),
    ("a link with an upper-case encoded dot-dot", lambda b: f"{b}/%2E%2E/admin"),
    ("a link with an encoded slash", lambda b: f"{b}/%2f..%2fadmin"),
    ("a link with a doubled slash", lambda b: f"{b}//admin"),
    ("a link with backslashes", lambda b: f"{b}/..\\admin"),
    (
        "a link naming the allowed host as userinfo",
        lambda b: f"http://127.0.0.1:{port_of(b)}@localhost:{port_of(b)}/fhir",
    ),
]


@pytest.mark.parametrize(("case", "link"), NEXT_ESCAPES, ids=[c for c, _ in NEXT_ESCAPES])
def test_next_link_of_a_server_page_that_escapes_is_a_412_and_never_followed(
    stubs, make_client, case, link
):
    """The server's search page links its next page through a path trick: the key fails (412
    naming it) and nothing outside /fhir is requested, so the token never goes there."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = FhirStub(
        full, fault="next-elsewhere", fault_types=("Observation",), next_elsewhere="placeholder"
    )
    stub.start()
    try:
        stub.next_elsewhere = link(stub.base_url)
        client = make_client(stub.base_url)
        response = client.post(URL, json=without_prefetch(full, stub.base_url, TOKEN))
    finally:
        stub.stop()
    assert response.status_code == 412, response.get_data(as_text=True)[:500]
    issue = response.get_json()["issue"][0]
    assert "prefetch.observations" in issue["expression"]
    assert "next link" in issue["diagnostics"]
    assert "admin" not in response.get_data(as_text=True)
    # At most one search per Observation key (a failed key cancels the keys not yet sent).
    assert [r.path for r in stub.requests].count("/fhir/Observation") <= OBSERVATION_KEYS, (
        "next was followed"
    )
    assert_nothing_left_fhir(stub)


@pytest.mark.parametrize(("case", "link"), NEXT_ESCAPES, ids=[c for c, _ in NEXT_ESCAPES])
def test_next_link_of_a_prefetched_page_that_escapes_is_a_412_and_never_followed(
    stubs, make_client, case, link
):
    """The EHR prefetched a first page whose next link is a path trick: 412 for that key, and
    the stub receives nothing outside /fhir."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    client = make_client(stub.base_url)
    paged = copy.deepcopy(full)
    first = stub.first_page("Observation", full["context"]["patientId"], 2)
    first["link"] = [{"relation": "next", "url": link(stub.base_url)}]
    paged["prefetch"]["observations"] = first
    paged["fhirServer"] = stub.base_url
    paged["fhirAuthorization"] = without_prefetch(full, stub.base_url, TOKEN)["fhirAuthorization"]
    response = client.post(URL, json=paged)
    assert response.status_code == 412, response.get_data(as_text=True)[:500]
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["prefetch.observations"]
    assert "next link" in issue["diagnostics"]
    assert stub.requests == []


ADMITTED = [
    ("the allowed prefix itself", lambda b: (b,), lambda b: b),
    ("a trailing slash on the fhirServer", lambda b: (b,), lambda b: f"{b}/"),
    ("a trailing slash on the allow-list entry", lambda b: (f"{b}/",), lambda b: b),
    (
        "an allow-list entry one segment above the server",
        lambda b: (b.removesuffix("/fhir"),),
        lambda b: b,
    ),
]


@pytest.mark.parametrize(("case", "allowed", "server"), ADMITTED, ids=[c for c, _, _ in ADMITTED])
def test_fhir_server_on_the_allow_list_is_called_with_the_token(
    stubs, make_client, case, allowed, server
):
    """Plain base URLs under an allowed prefix still work: cards as with full prefetch."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full, page_size=3)
    client = make_client(*allowed(stub.base_url))
    expected = client.post(URL, json=full)
    response = client.post(URL, json=without_prefetch(full, server(stub.base_url), TOKEN))
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.get_json() == expected.get_json()
    assert any("_offset" in r.query for r in stub.requests), "next pages were not followed"
    assert {r.authorization for r in stub.requests} == {f"Bearer {TOKEN}"}
    assert_nothing_left_fhir(stub)


NOT_PREFIXES = [
    ("a sibling path that starts with the same letters", "/fhir-admin"),
    ("the parent of the allowed path", ""),
]


@pytest.mark.parametrize(("case", "suffix"), NOT_PREFIXES, ids=[c for c, _ in NOT_PREFIXES])
def test_path_that_only_shares_text_with_the_allowed_prefix_is_refused(
    stubs, make_client, case, suffix
):
    """Compared by segments: /fhir does not admit /fhir-admin or the server root."""
    full = fixture_request("eligible_patient_at_order_select")
    stub = stubs(full)
    client = make_client(stub.base_url)
    server = stub.base_url.removesuffix("/fhir") + suffix
    response = client.post(URL, json=without_prefetch(full, server, TOKEN))
    assert response.status_code == 412
    assert "allow-list" in response.get_json()["issue"][0]["diagnostics"]
    assert stub.requests == []
