"""Starting and stopping real `cds-service serve` processes in tests: ports, readiness, shutdown."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    url: str,
    status: int = 200,
    timeout: float = 30.0,
    why_exited: Callable[[], str] = lambda: "",
) -> requests.Response:
    """Poll `url` until it answers `status`; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == status:
                return response
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or still warming
            pass
        assert proc.poll() is None, f"the server exited at start-up: {why_exited()}"
        assert time.monotonic() < deadline, f"{url} did not answer {status} in {timeout:g} s"
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGTERM the server by its process id; SIGKILL if it has not exited within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def raw_exchange(
    port: int, payload: bytes, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (malformed HTTP included) on a new connection and read the answer
    until the server closes it: (status, headers with lower-case names, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body
