"""The deadline-bound GET behind JWKS fetching (cds_service.deadline_fetch), against real servers on
127.0.0.1: verified TLS, a size cap, and one deadline while a server trickles its TLS handshake or,
over TLS, its headers (each read gets a byte in time, so per-read timeouts alone never fire)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwt_keys import TRICKLE_SECONDS, JwksServer

from cds_service.deadline_fetch import FetchFailed, fetch

DOC = {"keys": []}
MARGIN = 5.0


def self_signed_for_127_0_0_1(folder: Path) -> tuple[Path, Path]:
    """A certificate (its own CA) naming only the address 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cds test key server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[JwksServer, Path]]:
    """The JWKS test server behind TLS with a self-signed certificate for 127.0.0.1."""
    cert_file, key_file = self_signed_for_127_0_0_1(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = JwksServer()
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.documents["/jwks.json"] = DOC
    with server:
        yield server, cert_file


def https(server: JwksServer, path: str, host: str = "127.0.0.1") -> str:
    return f"https://{host}:{server.httpd.server_address[1]}{path}"


def test_a_key_server_with_a_trusted_certificate_is_read(
    tls_server: tuple[JwksServer, Path],
) -> None:
    """The control: trusting the server's certificate, the document is fetched over TLS."""
    server, cert_file = tls_server
    trusting = ssl.create_default_context(cafile=cert_file)
    assert fetch(https(server, "/jwks.json"), 3.0, 1024, tls=trusting) == b'{"keys": []}'


def test_a_key_server_whose_certificate_no_ca_vouches_for_is_refused(
    tls_server: tuple[JwksServer, Path],
) -> None:
    """With the default CA bundle a self-signed certificate fails verification."""
    server, _ = tls_server
    with pytest.raises(FetchFailed, match="SSLCertVerificationError"):
        fetch(https(server, "/jwks.json"), 3.0, 1024)


def test_a_certificate_for_another_host_name_is_refused(
    tls_server: tuple[JwksServer, Path],
) -> None:
    """Host names are checked: the certificate names 127.0.0.1, the URL says localhost."""
    server, cert_file = tls_server
    trusting = ssl.create_default_context(cafile=cert_file)
    with pytest.raises(FetchFailed, match="SSLCertVerificationError"):
        fetch(https(server, "/jwks.json", host="localhost"), 3.0, 1024, tls=trusting)


REFUSED = [
    ("a 404 is not a document", "/missing.json", "HTTP 404"),
    ("a body over the size cap is not read on", "/big.json", "larger than 1024 bytes"),
]


@pytest.mark.parametrize(("case", "path", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_anything_but_a_complete_200_answer_is_refused(case: str, path: str, message: str) -> None:
    with JwksServer() as server:
        server.documents["/big.json"] = {"keys": ["x" * 2048]}
        with pytest.raises(FetchFailed, match=message):
            fetch(server.url(path), 3.0, 1024)


class HandshakeTrickler:
    """Accepts one TCP connection and answers its TLS hello with the start of a 16 KiB record
    holding a ServerHello of plausible length, then one byte per TRICKLE_SECONDS: each read gets
    a byte in time, and the handshake is never done."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stopping = threading.Event()
        self.hung_up_at: float | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.listener.getsockname()[1]}/jwks.json"

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            try:
                conn.sendall(b"\x16\x03\x03\x40\x00" + b"\x02\x00\x3f\xfc")
                while not self.stopping.wait(TRICKLE_SECONDS):
                    conn.sendall(b"\x00")
            except OSError:
                self.hung_up_at = time.monotonic()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.mark.slow
def test_a_trickling_tls_handshake_ends_at_the_deadline() -> None:
    """The connection is given up at the deadline in the middle of the handshake; the server sees
    the hang-up."""
    server = HandshakeTrickler()
    try:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match="deadline"):
            fetch(server.url, 1.0, 1024)
        assert time.monotonic() - started < 1.0 + MARGIN
        server.thread.join(timeout=MARGIN)
        assert server.hung_up_at is not None and server.hung_up_at - started < 1.0 + MARGIN
    finally:
        server.close()


@pytest.mark.slow
def test_headers_trickled_over_tls_end_at_the_deadline(tls_server: tuple[JwksServer, Path]) -> None:
    """Once the socket has been handed over to TLS, the watchdog still reaches the connection (it
    holds a duplicate of the socket) and ends the trickle at the deadline."""
    server, cert_file = tls_server
    server.slow["/jwks.json"] = "headers"
    trusting = ssl.create_default_context(cafile=cert_file)
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="deadline"):
        fetch(https(server, "/jwks.json"), 1.0, 1024, tls=trusting)
    assert time.monotonic() - started < 1.0 + MARGIN
    hung_up = server.wait_for_hangup(timeout=1.0 + MARGIN)
    assert hung_up is not None and hung_up - started < 1.0 + MARGIN
