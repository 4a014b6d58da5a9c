"""EHR authentication (CDS Hooks "Trusting CDS Clients"): verify the JWT signing each EHR call.

Pure of Flask: `Verifier.verify(authorization_header, path)` returns the claims or raises
`AuthFailure(reason)`. The HTTP layer turns any failure into a bare 401; the reason is a short
fixed label (`REASONS`) for logs and metrics, never shown to the client. Tokens are never logged or
stored; only (iss, jti) are kept, in the replay store, until the token has expired.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from sqlalchemy import Connection, delete, insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .config import Settings
from .deadline_fetch import FetchFailed, fetch
from .storage import seen_jti

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds since the epoch; injected so tests can freeze time without touching the global clock."""

LEEWAY_SECONDS = 60
REFETCH_INTERVAL_SECONDS = 60.0
"""After a successful JWKS fetch, an unknown kid refetches at most this often (per URL)."""
RETRY_INTERVAL_SECONDS = 10.0
"""After a failed fetch, the next attempt waits this long: a slow or broken key server (or a
flood of made-up kids) costs at most one fetch, and one deadline of waiting, per interval."""
JWKS_DEADLINE_SECONDS = 2.0
"""Default of Settings.jwks_deadline_seconds: a JWKS fetch's deadline and a call's wait for keys."""
MAX_TOKEN_LIFETIME_SECONDS = 3600
"""exp - iat above this is refused: the replay store only has to remember jti for an hour."""
MAX_JWKS_BYTES = 256 * 1024
DEFAULT_ALGORITHMS = ("ES384", "RS384")
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
ISSUER_FIELDS = frozenset(
    {"iss", "jwks_url", "jwks", "jwks_file", "allowed_jku", "algorithms", "tenant", "audiences"}
)

REASONS = (
    "no-trusted-issuers",
    "missing-header",
    "not-bearer",
    "malformed",
    "untrusted-iss",
    "alg",
    "typ",
    "kid-missing",
    "jku",
    "no-key-source",
    "jwks-unavailable",
    "unknown-kid",
    "bad-signature",
    "aud",
    "exp-missing",
    "exp-invalid",
    "expired",
    "iat-missing",
    "iat-invalid",
    "iat-future",
    "lifetime",
    "nbf-invalid",
    "not-yet-valid",
    "jti-missing",
    "tenant",
    "replay",
)
"""Every label an `AuthFailure` can carry (a fixed set, so a metric can count them)."""

REASON_MEANINGS = {
    "no-trusted-issuers": "no trusted issuer is configured: every call is refused (fail closed)",
    "missing-header": "no `Authorization` header",
    "not-bearer": "the header is not `Bearer <token>`",
    "malformed": "not a decodable JWT (header, payload or signature encoding)",
    "untrusted-iss": "`iss` is not a configured issuer (or the signed payload names another one)",
    "alg": "header `alg` is not in the issuer's `algorithms`, or not the key's own `alg`",
    "typ": "header `typ` is present and is not `JWT`",
    "kid-missing": "no `kid` in the header",
    "jku": "header `jku` is not in the issuer's `allowed_jku` (it is never fetched)",
    "no-key-source": "the issuer has only `allowed_jku` and the token carries no `jku`",
    "jwks-unavailable": "the issuer's JWKS cannot be fetched within `CDS_JWKS_DEADLINE_SECONDS` "
    "(or failed less than "
    f"{RETRY_INTERVAL_SECONDS:g} s ago) and no key of it is cached",
    "unknown-kid": "no key with this `kid` (an unknown `kid` refetches the JWKS at most every "
    f"{REFETCH_INTERVAL_SECONDS:g} s per JWKS URL)",
    "bad-signature": "the signature does not verify with the key",
    "aud": "`aud` is neither the URL called (`CDS_PUBLIC_BASE_URL` + path) nor one of the issuer's "
    "`audiences`",
    "exp-missing": "no `exp`",
    "exp-invalid": "`exp` is not a finite number (NaN, Infinity, a string, a boolean, null or too "
    "large)",
    "expired": f"`exp` is more than {LEEWAY_SECONDS} s in the past",
    "iat-missing": "no `iat`",
    "iat-invalid": "`iat` is not a finite number",
    "iat-future": f"`iat` is more than {LEEWAY_SECONDS} s in the future",
    "lifetime": f"`exp - iat` is more than {MAX_TOKEN_LIFETIME_SECONDS} s",
    "nbf-invalid": "`nbf` is present and is not a finite number",
    "not-yet-valid": f"`nbf` is more than {LEEWAY_SECONDS} s in the future",
    "jti-missing": "no `jti`",
    "tenant": "the issuer is configured with a `tenant` and the token's `tenant` differs",
    "replay": "this issuer's `jti` was accepted before (a token is good for one call)",
}
"""What each reason means, for operators: the README's table is generated from it (a test keeps
it in step with REASONS)."""


class AuthConfigError(ValueError):
    """The trusted-issuer configuration is unusable; raised at start-up, never per request."""


class AuthFailure(Exception):
    """A refused token: `reason` is one of REASONS; `iss` the (unverified) claimed issuer."""

    def __init__(self, reason: str, iss: str | None = None) -> None:
        assert reason in REASONS, reason
        super().__init__(reason)
        self.reason = reason
        self.iss = iss


@dataclass(frozen=True)
class TrustedIssuer:
    """One EHR (or identity provider) whose signed calls we accept."""

    iss: str
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    allowed_jku: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    tenant: str | None = None
    audiences: tuple[str, ...] = ()


# --- configuration ----------------------------------------------------------------------------


def _check_url(url: Any, where: str, http_allowed_hosts: Sequence[str]) -> str:
    """https only; plain http just for hosts listed in http_allowed_hosts (tests on 127.0.0.1)."""
    if not isinstance(url, str) or not url:
        raise AuthConfigError(f"{where}: must be a URL string")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and parts.hostname in http_allowed_hosts:
        return url
    raise AuthConfigError(
        f"{where}: {url!r} must be an https URL (plain http only for hosts in http_allowed_hosts)"
    )


def _check_jwks(doc: Any, where: str) -> Mapping[str, Any]:
    """A pinned JWKS must hold public signing keys with a kid, and no private key material."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise AuthConfigError(f"{where}: must be a JWKS object with a non-empty 'keys' list")
    for i, key in enumerate(doc["keys"]):
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise AuthConfigError(f"{where}.keys[{i}]: every key needs a 'kid'")
        if any(private in key for private in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise AuthConfigError(f"{where}.keys[{i}]: contains private or symmetric key material")
        try:
            jwt.PyJWK.from_dict(key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError, TypeError) as exc:
            raise AuthConfigError(f"{where}.keys[{i}]: not a usable public key ({exc})") from None
    return doc


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthConfigError(f"{where}: must be a list of non-empty strings")
    return tuple(value)


def parse_trusted_issuers(
    doc: Any, *, base_dir: Path | None = None, http_allowed_hosts: Sequence[str] = ()
) -> tuple[TrustedIssuer, ...]:
    """Validate the JSON list of trusted issuers; each problem is an AuthConfigError naming it."""
    if not isinstance(doc, list):
        raise AuthConfigError("trusted issuers: expected a JSON list of issuer objects")
    issuers: list[TrustedIssuer] = []
    for n, entry in enumerate(doc):
        where = f"trusted issuers[{n}]"
        if not isinstance(entry, dict):
            raise AuthConfigError(f"{where}: must be an object")
        unknown = set(entry) - ISSUER_FIELDS
        if unknown:
            raise AuthConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        iss = entry.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthConfigError(f"{where}.iss: required, a non-empty string")
        if any(i.iss == iss for i in issuers):
            raise AuthConfigError(f"{where}.iss: {iss!r} is configured twice")
        where = f"trusted issuer {iss!r}"
        pinned = [k for k in ("jwks_url", "jwks", "jwks_file") if entry.get(k) is not None]
        if len(pinned) > 1:
            raise AuthConfigError(f"{where}: give at most one of jwks_url, jwks, jwks_file")
        jwks_url = (
            _check_url(entry["jwks_url"], f"{where}.jwks_url", http_allowed_hosts)
            if entry.get("jwks_url") is not None
            else None
        )
        jwks: Mapping[str, Any] | None = None
        if entry.get("jwks") is not None:
            jwks = _check_jwks(entry["jwks"], f"{where}.jwks")
        elif entry.get("jwks_file") is not None:
            if not isinstance(entry["jwks_file"], str):
                raise AuthConfigError(f"{where}.jwks_file: must be a path string")
            path = Path(entry["jwks_file"])
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            try:
                jwks = _check_jwks(
                    json.loads(path.read_text(encoding="utf-8")), f"{where}.jwks_file"
                )
            except OSError as exc:
                raise AuthConfigError(
                    f"{where}.jwks_file: cannot read {path}: {exc.strerror}"
                ) from None
            except json.JSONDecodeError as exc:
                raise AuthConfigError(f"{where}.jwks_file: {path} is not JSON ({exc})") from None
        allowed_jku = tuple(
            _check_url(u, f"{where}.allowed_jku", http_allowed_hosts)
            for u in _str_list(entry.get("allowed_jku"), f"{where}.allowed_jku")
        )
        if jwks_url is None and jwks is None and not allowed_jku:
            raise AuthConfigError(
                f"{where}: no key source; give jwks_url, jwks, jwks_file or allowed_jku"
            )
        algorithms = _str_list(entry.get("algorithms"), f"{where}.algorithms") or DEFAULT_ALGORITHMS
        for alg in algorithms:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise AuthConfigError(
                    f"{where}.algorithms: {alg!r} is not allowed (only asymmetric signatures: "
                    f"{', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
                )
        tenant = entry.get("tenant")
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise AuthConfigError(f"{where}.tenant: must be a non-empty string or null")
        issuers.append(
            TrustedIssuer(
                iss=iss,
                jwks_url=jwks_url,
                jwks=jwks,
                allowed_jku=allowed_jku,
                algorithms=algorithms,
                tenant=tenant,
                audiences=_str_list(entry.get("audiences"), f"{where}.audiences"),
            )
        )
    return tuple(issuers)


def load_trusted_issuers(settings: Settings) -> tuple[TrustedIssuer, ...]:
    """Issuers from `trusted_issuers_file` or `trusted_issuers_json` (not both); () when neither."""
    if settings.trusted_issuers_file and settings.trusted_issuers_json:
        raise AuthConfigError("set only one of trusted_issuers_file and trusted_issuers_json")
    if settings.trusted_issuers_file:
        path = Path(settings.trusted_issuers_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthConfigError(
                f"trusted_issuers_file: cannot read {path}: {exc.strerror}"
            ) from None
        base_dir: Path | None = path.parent
        source = f"trusted_issuers_file {path}"
    elif settings.trusted_issuers_json:
        text, base_dir, source = settings.trusted_issuers_json, None, "trusted_issuers_json"
    else:
        return ()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"{source}: not valid JSON ({exc})") from None
    return parse_trusted_issuers(
        doc, base_dir=base_dir, http_allowed_hosts=settings.http_allowed_hosts
    )


# --- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """A verification key and the algorithm its JWK declares (None when it declares none)."""

    key: Any
    alg: str | None


def _keys_by_kid(doc: Any) -> dict[str, PublicKey]:
    """Usable public signing keys of a JWKS by kid; unusable or encryption keys are skipped."""
    keys: dict[str, PublicKey] = {}
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        return keys
    for key in doc["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            continue
        if key.get("use", "sig") != "sig" or "d" in key or "k" in key:
            continue
        try:
            alg = key.get("alg") if isinstance(key.get("alg"), str) else None
            keys[key["kid"]] = PublicKey(jwt.PyJWK.from_dict(key).key, alg)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError, TypeError):
            continue
    return keys


class _Fetch:
    """One JWKS fetch in flight; the requests that need its result wait on `done`."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


@dataclass
class JwksSource:
    """The keys behind one JWKS URL, cached. An unknown kid refetches at most once per interval
    (a shorter one after a failed fetch); at most one fetch is in flight, in its own thread under
    one overall deadline, and a request waits for it only until its own budget runs out."""

    url: str
    clock: Clock
    deadline: float = JWKS_DEADLINE_SECONDS
    interval: float = REFETCH_INTERVAL_SECONDS
    retry_interval: float = RETRY_INTERVAL_SECONDS
    fetches: int = 0
    _keys: dict[str, PublicKey] = field(default_factory=dict)
    _last_attempt: float | None = None
    _last_ok: bool = False
    _in_flight: _Fetch | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self, kid: str, wait_until: float) -> PublicKey | None:
        """The key for kid (None: not published), fetching the JWKS when kid is unknown and a
        fetch is due. Waits for the fetch until `wait_until` (time.monotonic()) at the latest,
        then raises jwks-unavailable rather than holding the worker."""
        with self._lock:
            known = self._keys.get(kid)
            if known is not None:
                return known
            in_flight = self._in_flight
            if in_flight is None and self._fetch_due():
                in_flight = self._in_flight = _Fetch()
                self._last_attempt = self.clock()
                self.fetches += 1
                threading.Thread(
                    target=self._run, args=(in_flight,), name="jwks-fetch", daemon=True
                ).start()
            if in_flight is None:  # not due: answer from what the last fetch found
                if self._last_ok:
                    return None
                raise AuthFailure("jwks-unavailable")
        if not in_flight.done.wait(max(0.0, wait_until - time.monotonic())) or not in_flight.ok:
            raise AuthFailure("jwks-unavailable")
        with self._lock:
            return self._keys.get(kid)

    def _fetch_due(self) -> bool:
        if self._last_attempt is None:
            return True
        return self.clock() - self._last_attempt >= (
            self.interval if self._last_ok else self.retry_interval
        )

    def _run(self, in_flight: _Fetch) -> None:
        keys: dict[str, PublicKey] | None = None
        try:
            keys = self._fetch()
        except Exception as exc:  # a bug: keep the fetch from staying "in flight" forever
            log.error("JWKS %s fetch failed: %s", self.url, type(exc).__name__)
        finally:
            with self._lock:
                if keys is not None:
                    self._keys = keys
                self._last_ok = in_flight.ok = keys is not None
                self._in_flight = None
            in_flight.done.set()

    def _fetch(self) -> dict[str, PublicKey] | None:
        """GET the JWKS within the deadline (no redirects, size-capped); None when it cannot be
        had."""
        try:
            return _keys_by_kid(json.loads(fetch(self.url, self.deadline, MAX_JWKS_BYTES)))
        except FetchFailed as failed:
            log.warning("JWKS %s could not be fetched: %s", self.url, failed)
        except (ValueError, RecursionError) as exc:  # not JSON, or nested beyond reason
            log.warning("JWKS %s could not be fetched: %s", self.url, type(exc).__name__)
        return None


# --- replay store --------------------------------------------------------------------------------


class JtiStore(Protocol):
    def remember(self, iss: str, jti: str, expires_at: float) -> bool:
        """Record (iss, jti) until expires_at; False if it was already there (a replay)."""
        ...


class ReplayStoreUnavailable(Exception):
    """The replay store cannot be reached: no token can be accepted (the caller answers 503)."""


class _Transactional(Protocol):
    def begin(self) -> AbstractContextManager[Connection]: ...


def jti_key(jti: str) -> str:
    """The stored form of a jti: its SHA-256, so any jti a signed token carries (any length, any
    character, NUL included) fits the column and is compared exactly."""
    return hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()


class DatabaseJtiStore:
    """Seen jti in the `seen_jti` table: the unique (iss, jti) constraint makes insert-or-fail
    atomic, so replicas sharing one database (PostgreSQL) refuse each other's replays too.
    `database` is a `storage.Database` (app.extensions["cds_db"]) or an Engine."""

    def __init__(
        self, database: _Transactional, clock: Clock = time.time, purge_every_seconds: float = 300.0
    ) -> None:
        self.database = database
        self.clock = clock
        self.purge_every_seconds = purge_every_seconds
        self._last_purge = float("-inf")

    def remember(self, iss: str, jti: str, expires_at: float) -> bool:
        now = self.clock()
        try:
            if now - self._last_purge >= self.purge_every_seconds:
                with self.database.begin() as conn:
                    conn.execute(delete(seen_jti).where(seen_jti.c.expires_at < _utc(now)))
                self._last_purge = now
            with self.database.begin() as conn:
                conn.execute(
                    insert(seen_jti).values(iss=iss, jti=jti_key(jti), expires_at=_utc(expires_at))
                )
        except IntegrityError:
            return False
        except (SQLAlchemyError, OSError) as exc:
            log.warning("JWT replay store unavailable: %s", type(exc).__name__)
            raise ReplayStoreUnavailable() from None
        return True


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# --- verification --------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite JSON number, else None: Python's JSON parser admits NaN and Infinity (every
    comparison with NaN is false), integers too large for a float, and true/false are not times."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


_EC_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


def _key_fits(alg: str, key: Any) -> bool:
    """Whether alg can be verified with this key at all: RS*/PS* an RSA key, ES* an EC key on the
    curve the algorithm names, EdDSA an Ed25519/Ed448 key. A JWK need not name its alg, and PyJWT
    raises TypeError (not a PyJWTError) for a key of the wrong type, so this is checked first."""
    if alg[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _EC_CURVES[alg])
    if alg == "EdDSA":
        return isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
    return False


class Verifier:
    """Checks a CDS Hooks client JWT against the trusted issuers for the URL that was called."""

    def __init__(
        self,
        issuers: Sequence[TrustedIssuer],
        jti_store: JtiStore,
        public_base_url: str,
        clock: Clock = time.time,
        leeway: int = LEEWAY_SECONDS,
        jwks_deadline: float = JWKS_DEADLINE_SECONDS,
    ) -> None:
        if not issuers:
            raise AuthConfigError("no trusted issuers")
        self.issuers = {issuer.iss: issuer for issuer in issuers}
        self.jti_store = jti_store
        self.public_base_url = public_base_url.rstrip("/")
        self.clock = clock
        self.leeway = leeway
        self.jwks_deadline = jwks_deadline
        self._pinned = {i.iss: _keys_by_kid(i.jwks) for i in issuers if i.jwks is not None}
        self._sources: dict[str, JwksSource] = {}
        self._sources_lock = threading.Lock()

    def source(self, url: str) -> JwksSource:
        """One cache (and one refetch budget) per JWKS URL, shared by every issuer using it."""
        with self._sources_lock:
            if url not in self._sources:
                self._sources[url] = JwksSource(url, self.clock, self.jwks_deadline)
            return self._sources[url]

    def verify(self, authorization: str | None, path: str) -> dict[str, Any]:
        """The verified claims of the bearer token for a call to `path`, or AuthFailure."""
        wait_until = time.monotonic() + self.jwks_deadline  # this call's budget for keys
        if not authorization:
            raise AuthFailure("missing-header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise AuthFailure("not-bearer")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthFailure("malformed") from None
        claimed_iss = unverified.get("iss")
        issuer = self.issuers.get(claimed_iss) if isinstance(claimed_iss, str) else None
        if issuer is None:
            raise AuthFailure(
                "untrusted-iss", claimed_iss if isinstance(claimed_iss, str) else None
            )
        iss = issuer.iss

        alg = header.get("alg")
        if (
            not isinstance(alg, str)
            or alg not in ASYMMETRIC_ALGORITHMS
            or alg not in issuer.algorithms
        ):
            raise AuthFailure("alg", iss)
        typ = header.get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise AuthFailure("typ", iss)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthFailure("kid-missing", iss)

        key = self._key(issuer, header.get("jku"), kid, wait_until)
        if (key.alg is not None and key.alg != alg) or not _key_fits(alg, key.key):
            raise AuthFailure("alg", iss)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthFailure("bad-signature", iss) from None
        except (jwt.PyJWTError, TypeError, ValueError):
            raise AuthFailure("malformed", iss) from None
        if claims.get("iss") != iss:  # the verified payload must name the issuer we routed by
            raise AuthFailure("untrusted-iss", iss)
        self._check_claims(issuer, claims, path)
        return claims

    def _key(self, issuer: TrustedIssuer, jku: Any, kid: str, wait_until: float) -> PublicKey:
        """The key for kid: an allow-listed jku (fetched unless keys are pinned), else the
        issuer's own source. A jku that is not allow-listed is refused without any fetch."""
        if jku is not None and (not isinstance(jku, str) or jku not in issuer.allowed_jku):
            raise AuthFailure("jku", issuer.iss)
        url = jku if isinstance(jku, str) else issuer.jwks_url
        if issuer.jwks is not None:
            key = self._pinned[issuer.iss].get(kid)
        elif url is not None:
            try:
                key = self.source(url).key(kid, wait_until)
            except AuthFailure as failure:  # sources are shared by URL: name the issuer here
                raise AuthFailure(failure.reason, issuer.iss) from None
        else:
            raise AuthFailure("no-key-source", issuer.iss)
        if key is None:
            raise AuthFailure("unknown-kid", issuer.iss)
        return key

    def _check_claims(self, issuer: TrustedIssuer, claims: Mapping[str, Any], path: str) -> None:
        iss, now, leeway = issuer.iss, self.clock(), self.leeway
        expected = self.public_base_url + path
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(
            isinstance(a, str) and (a == expected or a in issuer.audiences) for a in audiences
        ):
            raise AuthFailure("aud", iss)
        if "exp" not in claims:
            raise AuthFailure("exp-missing", iss)
        exp = _number(claims["exp"])
        if exp is None:
            raise AuthFailure("exp-invalid", iss)
        if now > exp + leeway:
            raise AuthFailure("expired", iss)
        if "iat" not in claims:
            raise AuthFailure("iat-missing", iss)
        iat = _number(claims["iat"])
        if iat is None:
            raise AuthFailure("iat-invalid", iss)
        if iat > now + leeway:
            raise AuthFailure("iat-future", iss)
        if exp - iat > MAX_TOKEN_LIFETIME_SECONDS:
            raise AuthFailure("lifetime", iss)
        if "nbf" in claims:
            nbf = _number(claims["nbf"])
            if nbf is None:
                raise AuthFailure("nbf-invalid", iss)
            if nbf > now + leeway:
                raise AuthFailure("not-yet-valid", iss)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise AuthFailure("jti-missing", iss)
        if issuer.tenant is not None and claims.get("tenant") != issuer.tenant:
            raise AuthFailure("tenant", iss)
        # Last, so a token refused for another reason does not use up its jti.
        if not self.jti_store.remember(iss, jti, exp + leeway):
            raise AuthFailure("replay", iss)


def build_verifier(
    settings: Settings, database: _Transactional, clock: Clock = time.time
) -> Verifier | None:
    """The verifier for the configured issuers; None when none are configured (the app then
    refuses every call: fail closed). A bad configuration raises AuthConfigError."""
    issuers = load_trusted_issuers(settings)
    if not issuers:
        return None
    return Verifier(
        issuers,
        DatabaseJtiStore(database, clock),
        settings.public_base_url,
        clock,
        jwks_deadline=settings.jwks_deadline_seconds,
    )
