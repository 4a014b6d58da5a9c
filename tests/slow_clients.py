"""Slow clients (slowloris) against a server on 127.0.0.1, for tests/test_slow_clients.py and the
bench: connections that trickle a request header one byte at a time and never finish it, and honest
calls timed beside them. Bounded: a fixed number of sockets, stopped by the caller (and by a
deadline of their own), 127.0.0.1 only."""

from __future__ import annotations

import http.client
import socket
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

SLOW_REQUEST_HEAD = (
    b"POST /cds-services/lemtrada-order-select HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nContent-Type: application/json\r\nX-Slow: "
)


class SlowClients:
    """`count` connections that each send one more header byte every `interval` seconds.

    A connection the server closes is opened again at once (as an attacker would), so the
    server faces `count` slow sockets for the whole run. Stops after `max_seconds` whatever
    happens."""

    def __init__(
        self, port: int, count: int, interval: float = 0.5, max_seconds: float = 120.0
    ) -> None:
        self.port = port
        self.count = count
        self.interval = interval
        self.max_seconds = max_seconds
        self.reopened = 0
        self.bytes_sent = 0
        self._sockets: list[tuple[socket.socket, int] | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def _open(self) -> tuple[socket.socket, int] | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            return None
        sock.setblocking(False)
        return sock, 0

    def __enter__(self) -> SlowClients:
        self._sockets = [self._open() for _ in range(self.count)]
        self._thread.start()
        time.sleep(self.interval * 2)  # every socket has started its header
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for entry in self._sockets:
            if entry is not None:
                entry[0].close()

    @property
    def open_now(self) -> int:
        return sum(entry is not None for entry in self._sockets)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            for i, entry in enumerate(self._sockets):
                if entry is None:
                    self._sockets[i] = self._open()
                    continue
                sock, sent = entry
                payload = SLOW_REQUEST_HEAD[sent : sent + 1] or b"a"
                try:
                    sock.send(payload)
                    self.bytes_sent += 1
                    self._sockets[i] = (sock, sent + 1)
                except BlockingIOError:
                    pass  # the server reads nothing: the kernel buffer is full, try later
                except OSError:
                    sock.close()
                    self.reopened += 1
                    self._sockets[i] = self._open()


@dataclass
class HonestCalls:
    """Latencies of honest calls (seconds) and the calls that failed or timed out."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    def pct_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1e3

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1e3 if self.latencies else float("nan")


def honest_calls(
    port: int,
    calls: list[tuple[str, str, bytes | None]],
    timeout: float,
    parallel: int = 4,
    check: Callable[[int, bytes], bool] = lambda status, _body: status == 200,
) -> HonestCalls:
    """Each (method, path, body) as one call on a new connection, `parallel` at a time; a call
    counts as answered when `check` accepts its status and body within `timeout` seconds."""
    result = HonestCalls()
    lock = threading.Lock()

    def one(call: tuple[str, str, bytes | None]) -> None:
        method, path, body = call
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(
                method,
                path,
                body=body,
                headers={"Content-Type": "application/json"} if body else {},
            )
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - start
            ok = check(response.status, data) and elapsed <= timeout
            outcome = f"{method} {path}: HTTP {response.status} in {elapsed:.1f} s"
        except OSError as exc:
            ok, outcome = False, f"{method} {path}: {type(exc).__name__}"
            elapsed = 0.0
        finally:
            conn.close()
        with lock:
            if ok:
                result.latencies.append(elapsed)
            else:
                result.failures.append(outcome)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, calls))
    return result
