"""One HTTP GET bounded by one overall deadline, for small documents such as a JWKS.

Per-read socket timeouts cannot bound a server that trickles a byte every half second (each read
gets its byte in time, forever), whether it trickles the TLS handshake, the headers or the body.
So a watchdog shuts the socket at the deadline, which ends any read in progress, and the body is
read with `read1` (whatever has arrived) and checked against the deadline and a size cap.
No redirects, no proxy and no credentials from the environment (as the FHIR client), the same CA
bundle as `requests`, no compression (so the size cap is the size received).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from requests.utils import DEFAULT_CA_BUNDLE_PATH

CONNECT_TIMEOUT_SECONDS = 1.0


class FetchFailed(Exception):
    """The document could not be had within the deadline; the message names why (never a body)."""


class _Watchdog:
    """Shuts a socket at a deadline. It holds a duplicate of the socket, so the shutdown still
    reaches the connection after the original object has been handed over to TLS."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.fired = False
        self._sock = sock.dup()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError):  # already closed
            self._sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._timer.cancel()
        self._timer.join()
        self._sock.close()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates and host names verified, as `requests` does (one context, shared)."""
    return ssl.create_default_context(cafile=DEFAULT_CA_BUNDLE_PATH)


def fetch(
    url: str,
    deadline_seconds: float,
    max_bytes: int,
    accept: str = "application/json",
    tls: ssl.SSLContext | None = None,
) -> bytes:
    """The body of a 200 answer to GET url, received completely within deadline_seconds (DNS
    lookup aside, which no socket timeout covers); anything else raises FetchFailed. `tls`
    replaces the default verifying context (tests trust their own certificate with it)."""
    deadline = time.monotonic() + deadline_seconds
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    watchdog: _Watchdog | None = None
    sock: socket.socket | None = None
    conn: http.client.HTTPConnection | None = None
    try:
        sock = socket.create_connection(
            (host, port), timeout=min(CONNECT_TIMEOUT_SECONDS, deadline_seconds)
        )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailed("deadline")
        sock.settimeout(remaining)  # so no single read can outlive the deadline either
        watchdog = _Watchdog(sock, remaining)
        if parts.scheme == "https":
            sock = (tls or _tls_context()).wrap_socket(sock, server_hostname=host)
            conn = http.client.HTTPSConnection(host, port)
        else:
            conn = http.client.HTTPConnection(host, port)
        conn.sock = sock  # connected (and TLS-wrapped) above, under the watchdog
        conn.request("GET", target, headers={"Accept": accept})
        response = conn.getresponse()
        if response.status != 200:
            raise FetchFailed(f"HTTP {response.status}")
        body = bytearray()
        while chunk := response.read1(64 * 1024):
            body.extend(chunk)
            if len(body) > max_bytes:
                raise FetchFailed(f"larger than {max_bytes} bytes")
            if time.monotonic() >= deadline:
                raise FetchFailed("deadline")
        if watchdog.fired:  # the shutdown may read as the end of a body without a length
            raise FetchFailed("deadline")
        return bytes(body)
    except FetchFailed:
        raise
    except (OSError, http.client.HTTPException) as exc:
        timed_out = isinstance(exc, TimeoutError) or (watchdog is not None and watchdog.fired)
        raise FetchFailed("deadline" if timed_out else type(exc).__name__) from None
    finally:
        if watchdog is not None:
            watchdog.stop()
        if conn is not None:
            conn.close()  # the response too
        if sock is not None:
            sock.close()
