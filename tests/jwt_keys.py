"""Test keys and tokens for EHR authentication: keys are generated here, never copied from anywhere.

Also builds the forged tokens PyJWT refuses to make (alg none, HMAC keyed with a public key) and a
small real JWKS server on 127.0.0.1 that counts how often each path is fetched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass(frozen=True)
class SigningKey:
    """A private key the tests sign with, and its public JWK (what an EHR publishes)."""

    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return bytes(self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """A JWT signed like an EHR does: alg, typ JWT, kid (extra header fields may override; a
        value of None removes the field)."""
        fields = {k: v for k, v in {"typ": "JWT", "kid": self.kid, **header}.items()
                  if v is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=fields)


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES384", ec.generate_private_key(ec.SECP384R1()))


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def claims(iss: str, aud: str | list[str], now: float, lifetime: int = 300,
           **extra: Any) -> dict[str, Any]:
    """The payload CDS Hooks requires: iss, aud, exp, iat and a fresh jti (extra may override/add;
    a value of None removes the claim)."""
    payload: dict[str, Any] = {"iss": iss, "aud": aud, "exp": int(now) + lifetime, "iat": int(now),
                               "jti": uuid.uuid4().hex, **extra}
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


def with_payload(token: str, **changes: Any) -> str:
    """The token with its payload edited and the original signature kept (tampering)."""
    header, payload, signature = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_segment({**doc, **changes})}.{signature}"


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving JWKS documents by path, counting the fetches (each
    counted before it is answered, so a test that has its answer sees it counted)."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, int] = {}
        hits_lock = threading.Lock()  # handler threads run at the same time
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                with hits_lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                doc = outer.documents.get(self.path)
                body = json.dumps(doc if doc is not None else {"error": "not found"}).encode()
                self.send_response(200 if doc is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # not 5: a concurrent fetch never waits on a SYN retry

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
