"""A local EHR issuer for trying authentication without an EHR (`cds-service dev-issuer`).

Writes into one folder an ES384 key pair, its JWKS and an issuers file in the format the service
reads (`CDS_TRUSTED_ISSUERS_FILE`), and mints tokens as an EHR signs them (CDS Hooks "Trusting CDS
Clients"). For local testing only: the private key lies unencrypted in that folder, so whoever can
read it can sign calls the service accepts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .auth import MAX_TOKEN_LIFETIME_SECONDS

ALGORITHM = "ES384"
DEFAULT_ISS = "https://dev-issuer.invalid"
"""A name that can never be a real issuer (.invalid is reserved, RFC 2606)."""
DEFAULT_LIFETIME_SECONDS = 300
PRIVATE_KEY = "private-key.pem"
PUBLIC_KEY = "public-key.pem"
JWKS_FILE = "jwks.json"
ISSUERS_FILE = "issuers.json"


class DevIssuerError(Exception):
    """A folder or argument the kit cannot use; the message says what to do."""


@dataclass(frozen=True)
class DevIssuer:
    """The kit in one folder: who signs (iss), with which key (kid)."""

    folder: Path
    iss: str
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @property
    def issuers_file(self) -> Path:
        return self.folder / ISSUERS_FILE

    def mint(
        self, url: str, lifetime: int = DEFAULT_LIFETIME_SECONDS, now: float | None = None
    ) -> str:
        """A token for one call to `url` (its `aud`), as the service requires: iss, aud, exp, iat,
        a fresh jti; header alg ES384, typ JWT, kid."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DevIssuerError(
                f"--mint needs the full URL the EHR would call, e.g. "
                f"http://127.0.0.1:8080/cds-services (got {url!r})"
            )
        if not 0 < lifetime <= MAX_TOKEN_LIFETIME_SECONDS:
            raise DevIssuerError(
                f"the lifetime must be 1 to {MAX_TOKEN_LIFETIME_SECONDS} seconds "
                "(the service refuses longer-lived tokens)"
            )
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.iss,
            "aud": url,
            "exp": issued + lifetime,
            "iat": issued,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims, self.private_key, algorithm=ALGORITHM, headers={"typ": "JWT", "kid": self.kid}
        )


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The public key as a JWK with its RFC 7638 thumbprint as kid (stable for the key)."""
    jwk: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(ALGORITHM).to_jwk(key))
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")
    return {**jwk, "kid": kid.decode(), "use": "sig", "alg": ALGORITHM}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, mode)  # an existing file keeps its old mode through O_CREAT


def create(folder: Path, iss: str = DEFAULT_ISS, replace: bool = False) -> DevIssuer:
    """A new key pair, JWKS and issuers file in `folder` (created, owner-only). An existing kit
    is kept unless `replace`: its tokens would stop verifying."""
    if not iss:
        raise DevIssuerError("--iss must not be empty")
    if (folder / PRIVATE_KEY).exists() and not replace:
        raise DevIssuerError(f"{folder} already holds a dev issuer; --force replaces its key")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP384R1())
    jwk = public_jwk(private_key.public_key())
    _write(
        folder / PRIVATE_KEY,
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        mode=0o600,
    )
    _write(
        folder / PUBLIC_KEY,
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )
    _write(folder / JWKS_FILE, json.dumps({"keys": [jwk]}, indent=2) + "\n")
    issuers = [{"iss": iss, "jwks_file": JWKS_FILE, "algorithms": [ALGORITHM]}]
    _write(folder / ISSUERS_FILE, json.dumps(issuers, indent=2) + "\n")
    return DevIssuer(folder, iss, jwk["kid"], private_key)


def load(folder: Path) -> DevIssuer:
    """The kit `create` wrote in `folder`."""
    try:
        key = serialization.load_pem_private_key((folder / PRIVATE_KEY).read_bytes(), None)
        issuers = json.loads((folder / ISSUERS_FILE).read_text(encoding="utf-8"))
        iss = issuers[0]["iss"]
    except FileNotFoundError as exc:
        raise DevIssuerError(
            f"{folder} holds no dev issuer ({Path(exc.filename).name} is "
            "missing): run `cds-service dev-issuer FOLDER` first"
        ) from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DevIssuerError(
            f"{folder} holds an unreadable dev issuer "
            f"({type(exc).__name__}); --force writes a new one"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise DevIssuerError(f"{folder / PRIVATE_KEY} is not a P-384 key; --force writes a new one")
    return DevIssuer(folder, str(iss), public_jwk(key.public_key())["kid"], key)
