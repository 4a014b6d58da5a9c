"""Test keys and tokens for EHR authentication: keys are generated here, never copied from anywhere.

Also builds the forged tokens PyJWT refuses to make (alg none, HMAC keyed with a public key, a
payload holding NaN) and a small real JWKS server on 127.0.0.1 that counts how often each path is
fetched and can answer slowly (a byte every half second).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


@dataclass(frozen=True)
class SigningKey:
    """A private key the tests sign with, and its public JWK (what an EHR publishes)."""

    kid: str
    alg: str
    private: Any

    def public_jwk(self, with_alg: bool = True) -> dict[str, Any]:
        """The public JWK; `alg` is optional in a JWKS, so it can be left out."""
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.pop("alg", None)
        return {**jwk, "kid": self.kid, "use": "sig", **({"alg": self.alg} if with_alg else {})}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """A JWT signed like an EHR does: alg, typ JWT, kid (extra header fields may override; a
        value of None removes the field)."""
        fields = {
            k: v for k, v in {"typ": "JWT", "kid": self.kid, **header}.items() if v is not None
        }
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=fields)


EC_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES256K": ec.SECP256K1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


def ec_key(kid: str, alg: str = "ES384") -> SigningKey:
    return SigningKey(kid, alg, ec.generate_private_key(EC_CURVES[alg]))


def ed25519_key(kid: str) -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def claims(
    iss: str, aud: str | list[str], now: float, lifetime: int = 300, **extra: Any
) -> dict[str, Any]:
    """The payload CDS Hooks requires: iss, aud, exp, iat and a fresh jti (extra may override/add;
    a value of None removes the claim)."""
    payload: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "exp": int(now) + lifetime,
        "iat": int(now),
        "jti": uuid.uuid4().hex,
        **extra,
    }
    return {k: v for k, v in payload.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(doc: dict[str, Any]) -> str:
    return _b64(json.dumps(doc, separators=(",", ":")).encode())


def unsigned_token(payload: dict[str, Any], kid: str) -> str:
    """alg none: no signature at all."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_segment(payload)}."


def hs256_token(secret: bytes, payload: dict[str, Any], kid: str) -> str:
    """HS256 keyed with `secret` (the classic attack keys it with the issuer's public key bytes)."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def payload_text(payload: dict[str, Any], **literals: str) -> str:
    """The payload as JSON text, with the given members written literally: `NaN`, `Infinity`,
    `1e400`, a 400-digit integer... (what a careful JSON encoder refuses or rewrites)."""
    members = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in payload.items() if k not in literals]
    members += [f"{json.dumps(k)}:{text}" for k, text in literals.items()]
    return "{" + ",".join(members) + "}"


def sign_text(key: SigningKey, payload: str) -> str:
    """A JWT signed by hand over exactly this payload text (typ JWT, the key's alg and kid)."""
    header = _segment({"alg": key.alg, "typ": "JWT", "kid": key.kid})
    signing_input = f"{header}.{_b64(payload.encode())}"
    signature = jwt.get_algorithm_by_name(key.alg).sign(signing_input.encode(), key.private)
    return f"{signing_input}.{_b64(signature)}"


def with_payload(token: str, **changes: Any) -> str:
    """The token with its payload edited and the original signature kept (tampering)."""
    header, payload, signature = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_segment({**doc, **changes})}.{signature}"


TRICKLE_SECONDS = 0.5
"""A slow key server sends one byte per this interval."""
DELAY_SECONDS = 0.5


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving JWKS documents by path, counting the fetches (each
    counted before it is answered, so a test that has its answer sees it counted).
    A path in `slow` answers slowly: "delay" waits DELAY_SECONDS and then answers at once;
    "body" sends the headers, then the body a byte at a time; "headers" trickles everything.
    `hangups` records (time.monotonic()) each time a client hung up on a slow answer."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.slow: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.hangups: list[float] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                with outer.lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                doc = outer.documents.get(self.path)
                body = json.dumps(doc if doc is not None else {"error": "not found"}).encode()
                status = "200 OK" if doc is not None else "404 Not Found"
                head = (
                    f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                mode = outer.slow.get(self.path)
                try:
                    if mode == "delay" and outer.stopping.wait(DELAY_SECONDS):
                        return
                    if mode == "headers":
                        self.trickle(head + body)
                    elif mode == "body":
                        self.wfile.write(head)
                        self.trickle(body)
                    else:
                        self.wfile.write(head + body)
                except OSError:
                    with outer.lock:
                        outer.hangups.append(time.monotonic())

            def trickle(self, data: bytes) -> None:
                for i in range(len(data)):
                    if outer.stopping.wait(TRICKLE_SECONDS):
                        return
                    self.wfile.write(data[i : i + 1])

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # not 5: a concurrent fetch never waits on a SYN retry

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def wait_for_hangup(self, timeout: float) -> float | None:
        """When a client first hung up on a slow answer, waiting up to `timeout` s for it."""
        give_up = time.monotonic() + timeout
        while not self.hangups and time.monotonic() < give_up:
            time.sleep(0.05)
        return self.hangups[0] if self.hangups else None

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # slow answers stop at their next byte
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
