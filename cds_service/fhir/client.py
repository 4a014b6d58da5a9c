"""FHIR client for the prefetch fallback: fetch what the EHR did not prefetch from its fhirServer.

Safety properties, because the EHR's token is a credential for a patient's whole record:
- the token is sent only to an allow-listed fhirServer (https, or plain http for listed hosts) and
  to `next` links under that fhirServer; URLs are compared by parsed, once-decoded path segments,
  and any dot segment, encoded slash, doubled slash, backslash or userinfo is refused, never
  resolved; redirects are never followed; cookies are never kept;
- the token is never logged, stored or written into an error message;
- one overall deadline bounds every hook call; keys are fetched concurrently;
- anything that is not a clean FHIR answer (HTTP error, not JSON, wrong resource, an
  OperationOutcome, too many pages) makes that key fail -> 412, never "no data".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter

from ..config import Settings
from ..models import is_known_type
from ..observability import FHIR_FETCHES
from ..origin import Origin
from .prefetch import Endpoint, Fetched, FetchOutcome, next_link

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# A rendered query: `Type/id` or `Type?params`; ids per FHIR R4 (no path traversal via patientId).
QUERY = re.compile(r"^[A-Z][A-Za-z]{1,63}(/[A-Za-z0-9\-.]{1,256})?(\?[^#\s]*)?$")
_DEFAULT_PORT = {"http": 80, "https": 443}


class KeyFailed(Exception):
    """One prefetch key could not be obtained; the message is safe to show (no URL, no token)."""


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()


class UrlRefused(ValueError):
    """A URL the EHR's token must not be sent to; the message names the problem, never the URL."""


@dataclass(frozen=True)
class Location:
    """A URL as the allow-list compares it: scheme, host and port exactly, path by segments."""

    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]
    """Path segments, each percent-decoded once (a trailing slash adds none)."""
    has_query: bool

    def origin(self) -> tuple[str, str, int | None]:
        return self.scheme, self.host, self.port

    def under(self, prefix: Location) -> bool:
        """Same origin, and the prefix's path segments start this path (so /fhir does not admit
        /fhir-admin, and nothing admits what a server would resolve elsewhere)."""
        return (
            self.origin() == prefix.origin()
            and self.segments[: len(prefix.segments)] == prefix.segments
        )


_HOST = re.compile(r"^[a-z0-9.\-:]+$")


def _segment(raw: str) -> str:
    """One path segment percent-decoded once; refused when a server could read it as something
    other than a plain name: a dot segment (also encoded, also Tomcat's `..;x`), an encoded slash
    or backslash, a percent sign left after decoding (double encoding), or anything outside
    printable ASCII (overlong UTF-8 dots, control characters)."""
    decoded = unquote_to_bytes(raw)
    if any(b < 0x21 or b > 0x7E for b in decoded):
        raise UrlRefused("has a path segment outside printable ASCII")
    if b"/" in decoded or b"\\" in decoded:
        raise UrlRefused("has an encoded slash or backslash in its path")
    if b"%" in decoded:
        raise UrlRefused("has a double-encoded path")
    if decoded.split(b";", 1)[0] in (b".", b".."):
        raise UrlRefused("has a dot segment ('.' or '..') in its path")
    return decoded.decode("ascii")


def parse_location(url: str) -> Location:
    """Parse a URL the way the allow-list compares it, or raise UrlRefused. Dot segments are
    refused, not resolved: `requests` would resolve them before sending, so a text prefix check
    could be escaped (`<allowed>/../admin`)."""
    if "\\" in url:
        raise UrlRefused("contains a backslash")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise UrlRefused("is not a valid URL")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise UrlRefused("is not a valid URL") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UrlRefused("carries credentials in its URL")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORT:
        raise UrlRefused("is not https")
    if not host or not _HOST.match(host):
        raise UrlRefused("is not a valid URL")
    raw_segments = parts.path.split("/")
    if raw_segments[0] != "":
        raise UrlRefused("is not a valid URL")
    raw_segments = raw_segments[1:]
    if raw_segments and raw_segments[-1] == "":
        raw_segments.pop()  # one trailing slash
    if "" in raw_segments:
        raise UrlRefused("has an empty path segment (a doubled slash)")
    return Location(
        scheme,
        host,
        port or _DEFAULT_PORT[scheme],
        tuple(_segment(s) for s in raw_segments),
        bool(parts.query or parts.fragment or url.endswith(("?", "#"))),
    )


class FhirClient:
    """The app's Fetcher: one requests.Session shared by all hook calls (GETs only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        session = requests.Session()
        session.trust_env = False  # no .netrc credentials or proxy settings picked up implicitly
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # never keep cookies
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"Accept": FHIR_JSON})
        self.session = session
        self.allowed = _allowed_prefixes(settings.fhir_server_allowlist)
        self.http_hosts = frozenset(h.lower() for h in settings.http_allowed_hosts)

    # -- allow-list ---------------------------------------------------------------------------

    def check_url(self, url: str) -> Location:
        """The parsed URL when the EHR's token may be sent to it; UrlRefused saying why not."""
        location = parse_location(url)
        if location.scheme != "https" and location.host not in self.http_hosts:
            raise UrlRefused("is not https")
        if not any(location.under(prefix) for prefix in self.allowed):
            raise UrlRefused("is not on this service's allow-list")
        return location

    def server_problem(self, url: str) -> str | None:
        """Why this fhirServer may not be called with an EHR token, or None when it may."""
        try:
            location = self.check_url(url)
        except UrlRefused as exc:
            return str(exc)
        if location.has_query:
            return "has a query or fragment (it must be the server's base URL)"
        return None

    def _next_url(self, server: Location, current: str, link: str) -> str | None:
        """The absolute URL of a `next` link when it is on fhirServer (same origin, under its
        path); None when it points elsewhere. A link crafted to escape (dot segments, encoded
        slashes, backslashes, credentials) fails the key: its own text is checked before urljoin,
        which would resolve a relative `..` out of sight."""
        try:
            if "\\" in link:
                raise UrlRefused("contains a backslash")
            for raw in urlsplit(link).path.split("/"):
                if raw:
                    _segment(raw)
            url = urljoin(current, link)
            location = parse_location(url)
        except UrlRefused as exc:
            raise KeyFailed(f"a next link {exc}; not followed") from None
        return url if location.under(server) else None

    # -- Fetcher ------------------------------------------------------------------------------

    def __call__(
        self,
        endpoint: Endpoint,
        queries: Mapping[str, str],
        pages: Mapping[str, dict[str, Any]] | None = None,
    ) -> FetchOutcome:
        """Obtain every key concurrently within the deadline; what failed is in the outcome."""
        deadline = _Deadline(self.settings.fhir_deadline_seconds)
        keys = sorted(queries)
        outcome = FetchOutcome(deadline_seconds=deadline.seconds)
        base = endpoint.base_url.rstrip("/")
        problem = self.server_problem(base) if base else "is missing"
        if problem:
            outcome.refused = problem
            return outcome
        server = parse_location(base)
        token = endpoint.token
        pages = pages or {}
        pool = ThreadPoolExecutor(max_workers=max(1, len(keys)), thread_name_prefix="fhir-fetch")
        try:
            futures: dict[Future[Fetched], str] = {
                pool.submit(
                    self._obtain, server, base, queries[k], pages.get(k), token, deadline
                ): k
                for k in keys
            }
            done, _ = wait(
                futures, timeout=max(0.0, deadline.remaining()), return_when=FIRST_EXCEPTION
            )
        finally:
            # Never wait for stragglers: their own timeouts are bounded by the same deadline.
            pool.shutdown(wait=False, cancel_futures=True)
        for future, key in futures.items():
            if future not in done:
                FHIR_FETCHES.labels(outcome="unfinished").inc()  # deadline, or abandoned
                continue
            exc = future.exception()
            if exc is None:
                outcome.results[key] = future.result()
                FHIR_FETCHES.labels(outcome="ok").inc()
                continue
            FHIR_FETCHES.labels(outcome="failed").inc()
            if isinstance(exc, KeyFailed):
                outcome.failures[key] = str(exc)
            else:  # a bug, not the server: keep the detail in the log, not in the response
                log.error("fetching prefetch key %s failed: %s", key, type(exc).__name__)
                outcome.failures[key] = "internal error"
        outcome.unfinished = [
            k for k in keys if k not in outcome.results and k not in outcome.failures
        ]
        if outcome.failures or outcome.unfinished:
            log.warning(
                "prefetch fallback failed for %s",
                ", ".join(sorted({*outcome.failures, *outcome.unfinished})),
            )
        return outcome

    # -- one key ------------------------------------------------------------------------------

    def _obtain(
        self,
        server: Location,
        base: str,
        query: str,
        first_page: dict[str, Any] | None,
        token: str | None,
        deadline: _Deadline,
    ) -> Fetched:
        if first_page is not None:
            url = self._next_url(server, base + "/", next_link(first_page) or "")
            if url is not None:
                return Fetched(
                    self._complete(server, first_page, url, token, deadline),
                    Origin.FHIR_SERVER_PAGED,
                )
            origin = Origin.FHIR_SERVER_OTHER_ORIGIN
        else:
            origin = Origin.FHIR_SERVER
        if not QUERY.match(query) or ".." in query.split("?", 1)[0]:
            raise KeyFailed("the query is not a FHIR read or search")
        path = query.split("?", 1)[0]
        expected = "Bundle" if "?" in query else path.split("/", 1)[0]
        url = f"{base}/{query}"
        value = self._get(url, token, deadline)
        if value.get("resourceType") != expected:
            raise KeyFailed(
                f"the FHIR server answered a {value.get('resourceType')}, not a {expected}"
            )
        if expected == "Bundle":
            nxt = next_link(value)
            if nxt is not None:
                value = self._complete(
                    server, value, self._follow(server, base + "/", nxt), token, deadline
                )
        return Fetched(value, origin)

    def _follow(self, server: Location, current: str, link: str) -> str:
        """A next link of the server's own pages: followed only on fhirServer."""
        url = self._next_url(server, current, link)
        if url is None:
            raise KeyFailed("a next link points outside the FHIR server; not followed")
        return url

    def _complete(
        self,
        server: Location,
        first: dict[str, Any],
        url: str,
        token: str | None,
        deadline: _Deadline,
    ) -> dict[str, Any]:
        """Follow `next` links (on fhirServer, page cap) and merge all entries into one Bundle."""
        entries = _entries(first)
        followed = 0
        next_url: str | None = url
        while next_url is not None:
            if followed >= self.settings.fhir_page_cap:
                # Never a partial read: the rules cannot tell a cut history from a short one.
                raise KeyFailed(
                    f"more than {self.settings.fhir_page_cap} pages (the page cap, "
                    "CDS_FHIR_PAGE_CAP)"
                )
            page = self._get(next_url, token, deadline)
            followed += 1
            if page.get("resourceType") != "Bundle":
                raise KeyFailed(f"a next page is a {page.get('resourceType')}, not a Bundle")
            entries.extend(_entries(page))
            nxt = next_link(page)
            next_url = self._follow(server, next_url, nxt) if nxt else None
        merged = {k: v for k, v in first.items() if k not in ("link", "entry")}
        merged["entry"] = entries
        return merged

    def _get(self, url: str, token: str | None, deadline: _Deadline) -> dict[str, Any]:
        """GET one FHIR resource as JSON within the deadline; any problem is a KeyFailed."""
        try:  # the one place the token is sent: every URL is checked here, whoever built it
            self.check_url(url)
        except UrlRefused as exc:
            raise KeyFailed(f"a URL to fetch {exc}; not called") from None
        remaining = deadline.remaining()
        if remaining <= 0:
            raise KeyFailed(f"the deadline of {deadline.seconds:g} s passed")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = (min(self.settings.fhir_connect_timeout_seconds, remaining), remaining)
        try:
            with self.session.get(
                url, headers=headers, timeout=timeout, stream=True, allow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise KeyFailed(f"the FHIR server answered HTTP {response.status_code}")
                body = bytearray()
                # read1: whatever has arrived, so the deadline is checked as data trickles in
                # (iter_content would wait for a whole chunk and outlive the hook call).
                while chunk := response.raw.read1(64 * 1024, decode_content=True):
                    body.extend(chunk)
                    if len(body) > self.settings.max_body_bytes:
                        raise KeyFailed("the FHIR server's answer is too large")
                    if deadline.remaining() <= 0:
                        raise KeyFailed(f"the deadline of {deadline.seconds:g} s passed")
        except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
            raise KeyFailed(
                f"the FHIR server did not answer within the deadline of {deadline.seconds:g} s"
            ) from None
        # Reading the raw stream raises urllib3's and the socket's own errors, not requests'.
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            # The message may hold the URL: keep it out.
            raise KeyFailed(
                f"the FHIR server could not be reached ({type(exc).__name__})"
            ) from None
        try:
            value = orjson.loads(bytes(body))
        except orjson.JSONDecodeError:
            raise KeyFailed("the FHIR server's answer is not JSON") from None
        if not isinstance(value, dict) or not is_known_type(value.get("resourceType")):
            raise KeyFailed("the FHIR server's answer is not a FHIR resource")
        if value["resourceType"] == "OperationOutcome":
            raise KeyFailed("the FHIR server answered an OperationOutcome")
        return value


def _entries(bundle: dict[str, Any]) -> list[Any]:
    """A Bundle's entries; a server sending a non-array `entry` is a failed key, not a crash."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise KeyFailed("the Bundle's entry is not an array")
    return list(entries)


def _allowed_prefixes(entries: tuple[str, ...]) -> tuple[Location, ...]:
    """The allow-list, parsed once; an unusable entry admits nothing (logged at start-up)."""
    prefixes = []
    for number, entry in enumerate(entries, start=1):
        try:
            prefix = parse_location(entry)
        except UrlRefused as exc:
            log.error("fhir_server_allowlist entry %d %s: ignored", number, exc)
            continue
        if prefix.has_query:
            log.error("fhir_server_allowlist entry %d has a query or fragment: ignored", number)
            continue
        prefixes.append(prefix)
    return tuple(prefixes)
