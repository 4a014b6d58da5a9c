"""EHR authentication (CDS Hooks "Trusting CDS Clients", issue #3 item 3): every call carries a JWT
signed by a trusted EHR for the exact URL called; anything else is a bare 401."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from fixture_requests import fixture_request
from jwt_keys import (
    JwksServer,
    SigningKey,
    claims,
    ec_key,
    ed25519_key,
    hs256_token,
    jwks,
    payload_text,
    rsa_key,
    sign_text,
    unsigned_token,
    with_payload,
)
from prometheus_client.parser import text_string_to_metric_families
from served import free_port, stop, wait_until_serving
from sqlalchemy import create_engine, func, select

from cds_service.app import create_app
from cds_service.auth import (
    ASYMMETRIC_ALGORITHMS,
    AuthConfigError,
    AuthFailure,
    DatabaseJtiStore,
    Verifier,
    parse_trusted_issuers,
)
from cds_service.storage import create_schema, seen_jti

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = Path(__file__).resolve().parent / "data" / "sandbox"
BASE = "https://cds.example.org"
ISS = "https://ehr.example.org"
TENANT_ISS = "https://tenant-ehr.example.org"
SERVICE = "lemtrada-order-select"
DISCOVERY, CALL, FEEDBACK = (
    "/cds-services",
    f"/cds-services/{SERVICE}",
    f"/cds-services/{SERVICE}/feedback",
)


@dataclass(frozen=True)
class Keys:
    ec: SigningKey
    rsa: SigningKey
    impostor: SigningKey  # same kid as `ec`, a different private key
    tenant: SigningKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(ec_key("ec-2026"), rsa_key("rsa-2026"), ec_key("ec-2026"), ec_key("tenant-key"))


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'auth.sqlite3'}"


def issuers_json(keys: Keys, server: JwksServer) -> str:
    return json.dumps(
        [
            {
                "iss": ISS,
                "jwks": jwks(keys.ec, keys.rsa),
                "allowed_jku": [server.url("/ehr-jwks.json")],
            },
            {
                "iss": TENANT_ISS,
                "jwks_url": server.url("/tenant-jwks.json"),
                "tenant": "hospital-a",
            },
        ]
    )


@pytest.fixture
def authenticated_client(keys: Keys, jwks_server: JwksServer, tmp_path: Path) -> Iterator[Any]:
    jwks_server.documents["/tenant-jwks.json"] = jwks(keys.tenant)
    app = create_app(
        public_base_url=BASE,
        database_url=sqlite_url(tmp_path),
        auth_disabled=False,
        http_allowed_hosts=("127.0.0.1",),
        trusted_issuers_json=issuers_json(keys, jwks_server),
    )
    yield app.test_client()
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(client: Any, path: str, headers: dict[str, str]) -> Any:
    """GET discovery; POST a real hook request to a service; POST valid feedback to feedback."""
    if path == DISCOVERY:
        return client.get(path, headers=headers)
    if path.endswith("/feedback"):
        body = {
            "feedback": [
                {
                    "card": str(uuid.uuid4()),
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-01-12T10:05:31Z",
                }
            ]
        }
        return client.post(path, json=body, headers=headers)
    hook = fixture_request("eligible_patient_at_order_select")
    return client.post(path, json=hook, headers=headers)


# --- valid tokens ---------------------------------------------------------------------------------

POSITIVE = [
    ("an ES384 token for discovery opens discovery", "ec", DISCOVERY, {}),
    ("an RS384 token for discovery opens discovery", "rsa", DISCOVERY, {}),
    ("an ES384 token for the service opens the service", "ec", CALL, {}),
    ("an RS384 token for the service opens the service", "rsa", CALL, {}),
    ("an ES384 token for feedback opens feedback", "ec", FEEDBACK, {}),
    ("an RS384 token for feedback opens feedback", "rsa", FEEDBACK, {}),
    ("extra claims nbf and sub are tolerated", "ec", CALL, {"nbf": "now", "sub": "dr-who"}),
    ("aud may be a list holding the URL called", "ec", CALL, {"aud": ["other", BASE + CALL]}),
    (
        "a token issued 30 s in the future (clock skew) is accepted",
        "rsa",
        DISCOVERY,
        {"iat": "now+30"},
    ),
]


@pytest.mark.parametrize(("case", "key", "path", "extra"), POSITIVE, ids=[c[0] for c in POSITIVE])
def test_a_valid_ehr_token_is_accepted(
    authenticated_client: Any, keys: Keys, case: str, key: str, path: str, extra: dict[str, Any]
) -> None:
    """A correctly signed token for the exact URL called gets the endpoint's normal answer."""
    now = time.time()
    resolved = {
        k: (now + 30 if v == "now+30" else now if v == "now" else v) for k, v in extra.items()
    }
    token = getattr(keys, key).sign(claims(ISS, resolved.pop("aud", BASE + path), now, **resolved))
    response = call(authenticated_client, path, bearer(token))
    assert response.status_code == 200, response.get_json()
    if path == DISCOVERY:
        assert {s["id"] for s in response.get_json()["services"]} >= {SERVICE}
    elif path == CALL:
        assert isinstance(response.get_json()["cards"], list)


def test_a_token_from_an_issuer_with_a_tenant_is_accepted_for_that_tenant(
    authenticated_client: Any, keys: Keys, jwks_server: JwksServer
) -> None:
    """An issuer configured with a tenant and a JWKS URL: its keys are fetched from that URL."""
    token = keys.tenant.sign(claims(TENANT_ISS, BASE + DISCOVERY, time.time(), tenant="hospital-a"))
    assert call(authenticated_client, DISCOVERY, bearer(token)).status_code == 200
    assert jwks_server.hits == {"/tenant-jwks.json": 1}


# --- attacks: every one a bare 401 ----------------------------------------


@dataclass
class Ctx:
    client: Any
    keys: Keys
    server: JwksServer
    now: float

    def valid(self, path: str = DISCOVERY, **extra: Any) -> dict[str, Any]:
        return claims(ISS, BASE + path, self.now, **extra)


def signed(key: SigningKey, payload: dict[str, Any], **header: Any) -> str:
    return f"Bearer {key.sign(payload, **header)}"


def _replayed(ctx: Ctx) -> tuple[str, str]:
    token = ctx.keys.ec.sign(ctx.valid())
    assert call(ctx.client, DISCOVERY, bearer(token)).status_code == 200
    return f"Bearer {token}", DISCOVERY


Attack = Callable[[Ctx], "tuple[str | None, str]"]
ATTACKS: list[tuple[str, Attack, str]] = [
    (
        "a request without an Authorization header is refused",
        lambda c: (None, DISCOVERY),
        "missing-header",
    ),
    (
        "a Basic credential instead of a Bearer token is refused",
        lambda c: ("Basic dXNlcjpwYXNz", DISCOVERY),
        "not-bearer",
    ),
    (
        "a bare token without the Bearer scheme is refused",
        lambda c: (c.keys.ec.sign(c.valid()), DISCOVERY),
        "not-bearer",
    ),
    (
        "a token that is not a JWT is refused",
        lambda c: ("Bearer not.a.jwt", DISCOVERY),
        "malformed",
    ),
    (
        "an unsigned token (alg none) is refused",
        lambda c: (f"Bearer {unsigned_token(c.valid(), 'ec-2026')}", DISCOVERY),
        "alg",
    ),
    (
        "an HS256 token keyed with the issuer's public key is refused",
        lambda c: (
            f"Bearer {hs256_token(c.keys.ec.public_pem(), c.valid(), 'ec-2026')}",
            DISCOVERY,
        ),
        "alg",
    ),
    (
        "an expired token is refused",
        lambda c: (
            f"Bearer {c.keys.ec.sign(c.valid(exp=int(c.now) - 61, iat=int(c.now) - 361))}",
            DISCOVERY,
        ),
        "expired",
    ),
    (
        "a token for another server's URL is refused",
        lambda c: (
            signed(c.keys.ec, claims(ISS, "https://other.example.org/cds-services", c.now)),
            DISCOVERY,
        ),
        "aud",
    ),
    (
        "a discovery token used on a service is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(DISCOVERY))}", CALL),
        "aud",
    ),
    (
        "a service token used on feedback is refused",
        lambda c: (f"Bearer {c.keys.rsa.sign(c.valid(CALL))}", FEEDBACK),
        "aud",
    ),
    (
        "a token signed with a key id the issuer never published is refused",
        lambda c: (signed(c.keys.ec, c.valid(), kid="unknown-kid"), DISCOVERY),
        "unknown-kid",
    ),
    (
        "a token whose jku is not allow-listed is refused without fetching it",
        lambda c: (
            f"Bearer {c.keys.ec.sign(c.valid(), jku=c.server.url('/attacker-jwks.json'))}",
            DISCOVERY,
        ),
        "jku",
    ),
    ("a replayed token (same jti) is refused the second time", _replayed, "replay"),
    (
        "a token with a tampered payload is refused",
        lambda c: (
            f"Bearer {with_payload(c.keys.ec.sign(c.valid(CALL)), aud=BASE + DISCOVERY)}",
            DISCOVERY,
        ),
        "bad-signature",
    ),
    (
        "a token signed by an impostor key with a published kid is refused",
        lambda c: (f"Bearer {c.keys.impostor.sign(c.valid())}", DISCOVERY),
        "bad-signature",
    ),
    (
        "a token from an untrusted issuer is refused",
        lambda c: (
            signed(c.keys.ec, claims("https://evil.example.org", BASE + DISCOVERY, c.now)),
            DISCOVERY,
        ),
        "untrusted-iss",
    ),
    (
        "a token without a jti is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(jti=None))}", DISCOVERY),
        "jti-missing",
    ),
    (
        "a token without exp is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(exp=None))}", DISCOVERY),
        "exp-missing",
    ),
    (
        "a token without iat is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(iat=None))}", DISCOVERY),
        "iat-missing",
    ),
    (
        "a token issued two minutes in the future is refused",
        lambda c: (signed(c.keys.ec, c.valid(iat=int(c.now) + 120)), DISCOVERY),
        "iat-future",
    ),
    (
        "a token valid for more than an hour is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(lifetime=2 * 3600))}", DISCOVERY),
        "lifetime",
    ),
    (
        "a token not valid before two minutes from now is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(nbf=int(c.now) + 120))}", DISCOVERY),
        "not-yet-valid",
    ),
    (
        "a token without a kid is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(), kid=None)}", DISCOVERY),
        "kid-missing",
    ),
    (
        "a token whose typ is not JWT is refused",
        lambda c: (f"Bearer {c.keys.ec.sign(c.valid(), typ='at+jwt')}", DISCOVERY),
        "typ",
    ),
    (
        "an RS256 token (alg not in the issuer's list) is refused",
        lambda c: (
            f"Bearer {SigningKey('rsa-2026', 'RS256', c.keys.rsa.private).sign(c.valid())}",
            DISCOVERY,
        ),
        "alg",
    ),
    (
        "a token for the wrong tenant is refused",
        lambda c: (
            signed(c.keys.tenant, claims(TENANT_ISS, BASE + DISCOVERY, c.now, tenant="hospital-b")),
            DISCOVERY,
        ),
        "tenant",
    ),
    (
        "a token without a tenant from a tenant issuer is refused",
        lambda c: (
            f"Bearer {c.keys.tenant.sign(claims(TENANT_ISS, BASE + DISCOVERY, c.now))}",
            DISCOVERY,
        ),
        "tenant",
    ),
]


@pytest.mark.parametrize(("case", "attack", "reason"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_an_attack_gets_a_bare_401(
    authenticated_client: Any,
    keys: Keys,
    jwks_server: JwksServer,
    caplog: pytest.LogCaptureFixture,
    case: str,
    attack: Attack,
    reason: str,
) -> None:
    """The client learns nothing but 401; the log names the reason (and never holds the token)."""
    authorization, path = attack(Ctx(authenticated_client, keys, jwks_server, time.time()))
    headers = {"Authorization": authorization} if authorization is not None else {}
    with caplog.at_level(logging.INFO, logger="cds_service.auth"):
        response = call(authenticated_client, path, headers)
    assert response.status_code == 401
    assert response.get_json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "security",
                "diagnostics": "Unauthorized",
                "details": {"text": "Unauthorized"},
            }
        ],
    }
    refusals = [
        getattr(r, "reason", None) for r in caplog.records if r.getMessage() == "EHR token refused"
    ]
    assert refusals == [reason]
    if authorization:
        assert authorization.split()[-1] not in caplog.text
    assert "/attacker-jwks.json" not in jwks_server.hits  # a jku not allow-listed is never fetched


def test_preflight_needs_no_token(authenticated_client: Any) -> None:
    """A browser's CORS preflight carries no Authorization header and must not be refused."""
    response = authenticated_client.options(
        CALL, headers={"Origin": "https://ehr.example.org", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code in (200, 204)


def test_without_trusted_issuers_every_request_is_refused(tmp_path: Path) -> None:
    """Fail closed: an app built with authentication on but no issuer answers nothing but 401."""
    app = create_app(
        public_base_url=BASE,
        database_url=sqlite_url(tmp_path),
        auth_disabled=False,
        trusted_issuers_json="",
        trusted_issuers_file="",
    )
    client = app.test_client()
    assert client.get(DISCOVERY).status_code == 401
    assert client.get(DISCOVERY, headers={"Authorization": "Bearer x.y.z"}).status_code == 401


def test_a_valid_token_gets_503_while_the_replay_store_is_down(keys: Keys, tmp_path: Path) -> None:
    """Without the replay check no token can be accepted: 503 (not a 200, not a misleading 401)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    app = create_app(
        public_base_url=BASE,
        database_url=f"sqlite:///{blocker}/db.sqlite3",
        auth_disabled=False,
        trusted_issuers_json=json.dumps([{"iss": ISS, "jwks": jwks(keys.ec)}]),
    )
    token = keys.ec.sign(claims(ISS, BASE + DISCOVERY, time.time()))
    assert app.test_client().get(DISCOVERY, headers=bearer(token)).status_code == 503


def test_an_invalid_issuer_configuration_stops_the_app_from_being_built(tmp_path: Path) -> None:
    """A typo in the trusted issuers is a start-up error naming the field, not a silent 401."""
    with pytest.raises(AuthConfigError, match="algorithms"):
        create_app(
            public_base_url=BASE,
            database_url=sqlite_url(tmp_path),
            auth_disabled=False,
            trusted_issuers_json=json.dumps(
                [{"iss": ISS, "jwks_url": "https://e.org/j", "algorithms": ["HS256"]}]
            ),
        )


# --- every algorithm against every key type: a 401 with a counted reason, never a 500 ----------

MATRIX_KEYS = {  # kid -> (what the issuer publishes, its signing key, alg in the JWK?)
    "rsa": ("an RSA key without alg", lambda: rsa_key("rsa"), False),
    "rsa-rs384": ("an RSA key with alg RS384", lambda: rsa_key("rsa-rs384"), True),
    "ec-p256": ("a P-256 EC key without alg", lambda: ec_key("ec-p256", "ES256"), False),
    "ec-p384": ("a P-384 EC key without alg", lambda: ec_key("ec-p384", "ES384"), False),
    "ec-p384-es384": ("a P-384 EC key with alg ES384", lambda: ec_key("ec-p384-es384"), True),
    "ec-p521": ("a P-521 EC key without alg", lambda: ec_key("ec-p521", "ES512"), False),
    "ed25519": ("an Ed25519 key without alg", lambda: ed25519_key("ed25519"), False),
    "ed25519-eddsa": ("an Ed25519 key with alg EdDSA", lambda: ed25519_key("ed25519-eddsa"), True),
}
MATRIX_ALGORITHMS = [
    "HS256",
    "none",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES256K",
    "ES384",
    "ES512",
    "ES521",
    "EdDSA",
]
VERIFIES = {
    ("RS256", "rsa"),
    ("RS384", "rsa"),
    ("RS512", "rsa"),
    ("PS256", "rsa"),
    ("PS384", "rsa"),
    ("PS512", "rsa"),
    ("RS384", "rsa-rs384"),
    ("ES256", "ec-p256"),
    ("ES384", "ec-p384"),
    ("ES384", "ec-p384-es384"),
    ("ES512", "ec-p521"),
    ("EdDSA", "ed25519"),
    ("EdDSA", "ed25519-eddsa"),
}
"""The only combinations that verify: the key type (and EC curve) the algorithm needs, and the
JWK's own alg when it names one. The issuer allows every asymmetric algorithm, so the key is what
decides."""
MATRIX = [(alg, kid) for alg in MATRIX_ALGORITHMS for kid in MATRIX_KEYS]


def _matrix_id(alg: str, kid: str) -> str:
    outcome = "verifies" if (alg, kid) in VERIFIES else "is refused"
    return f"{alg} naming {MATRIX_KEYS[kid][0]} {outcome}"


@dataclass(frozen=True)
class MatrixApp:
    client: Any
    keys: dict[str, SigningKey]


@pytest.fixture(scope="module")
def matrix_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixApp]:
    keys = {kid: make() for kid, (_, make, _) in MATRIX_KEYS.items()}
    published = {
        "keys": [
            keys[kid].public_jwk(with_alg=with_alg) for kid, (_, _, with_alg) in MATRIX_KEYS.items()
        ]
    }
    issuer = {"iss": ISS, "jwks": published, "algorithms": sorted(ASYMMETRIC_ALGORITHMS)}
    app = create_app(
        public_base_url=BASE,
        auth_disabled=False,
        database_url=sqlite_url(tmp_path_factory.mktemp("matrix")),
        trusted_issuers_json=json.dumps([issuer]),
    )
    yield MatrixApp(app.test_client(), keys)
    app.extensions["cds_audit"].flush()  # the writer thread is done with the db
    app.extensions["cds_db"].dispose()


def _attacker_key(alg: str) -> Any:
    """A private key an attacker could sign `alg` with (not the issuer's)."""
    if alg[:2] in ("RS", "PS"):
        return rsa_key("attacker").private
    if alg == "EdDSA":
        return ed25519_key("attacker").private
    return ec_key("attacker", "ES512" if alg == "ES521" else alg).private


def matrix_token(alg: str, key: SigningKey, payload: dict[str, Any]) -> str:
    """A token with header alg naming key's kid: signed with the issuer's own private key when
    that key can make such a signature at all (so only the algorithm check can refuse it), else
    with an attacker's key of the type the algorithm needs; HS256 keyed with the public key;
    none unsigned."""
    if alg == "none":
        return unsigned_token(payload, key.kid)
    if alg == "HS256":
        return hs256_token(key.public_pem(), payload, key.kid)
    headers = {"typ": "JWT", "kid": key.kid}
    try:
        return jwt.encode(payload, key.private, algorithm=alg, headers=headers)
    except (TypeError, ValueError, jwt.PyJWTError):  # the issuer's key cannot sign this alg
        return jwt.encode(payload, _attacker_key(alg), algorithm=alg, headers=headers)


def refusals(client: Any) -> dict[str, float]:
    """cds_auth_failures_total by reason, read from /metrics as Prometheus does."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "cds_auth_failures_total"
    }


def assert_refused_and_counted(
    client: Any, authorization: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bare 401, one log line with `reason`, and cds_auth_failures_total{reason} up by one."""
    before = refusals(client)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cds_service.auth"):
        response = client.get(DISCOVERY, headers={"Authorization": authorization})
    assert response.status_code == 401, response.get_json()
    assert [
        getattr(r, "reason", None) for r in caplog.records if r.getMessage() == "EHR token refused"
    ] == [reason]
    after = refusals(client)
    assert {r: after[r] - before.get(r, 0.0) for r in after if after[r] != before.get(r, 0.0)} == {
        reason: 1.0
    }


# Slow: 112 pairings, each signed for real (RSA and PSS included) and counted through /metrics.
@pytest.mark.slow
@pytest.mark.parametrize(("alg", "kid"), MATRIX, ids=[_matrix_id(a, k) for a, k in MATRIX])
def test_each_algorithm_against_each_key_type(
    matrix_app: MatrixApp, alg: str, kid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only an algorithm the named key can verify (and that its JWK's alg allows) verifies; every
    other pairing is a 401 counted as `alg`, never a 500 (PyJWT raises TypeError when handed a key
    of the wrong type, so the pairing is checked before any signature is)."""
    token = matrix_token(alg, matrix_app.keys[kid], claims(ISS, BASE + DISCOVERY, time.time()))
    if (alg, kid) in VERIFIES:
        response = matrix_app.client.get(DISCOVERY, headers=bearer(token))
        assert response.status_code == 200, response.get_json()
    else:
        assert_refused_and_counted(matrix_app.client, f"Bearer {token}", "alg", caplog)


# --- time claims that are not finite numbers ----------------------------------------------------

TOO_MANY_DIGITS = "1" + "0" * 5000  # beyond Python's integer parsing limit: not even JSON to us
BAD_TIME_CLAIMS = [
    ("iat NaN is refused (comparisons with NaN are all false)", "iat", "NaN", "iat-invalid"),
    ("nbf NaN is refused", "nbf", "NaN", "nbf-invalid"),
    ("exp NaN is refused (it was a 500)", "exp", "NaN", "exp-invalid"),
    ("exp Infinity is refused", "exp", "Infinity", "exp-invalid"),
    ("iat -Infinity is refused", "iat", "-Infinity", "iat-invalid"),
    ("nbf -Infinity is refused", "nbf", "-Infinity", "nbf-invalid"),
    ("nbf Infinity is refused", "nbf", "Infinity", "nbf-invalid"),
    ("exp 1e400 (infinite as a float) is refused", "exp", "1e400", "exp-invalid"),
    ("exp as a 400-digit integer is refused (it was a 500)", "exp", "1" + "0" * 400, "exp-invalid"),
    ("iat as a 5000-digit integer is refused", "iat", TOO_MANY_DIGITS, "malformed"),
    ("exp as a numeric string is refused", "exp", '"1900000000"', "exp-invalid"),
    ("iat true is refused", "iat", "true", "iat-invalid"),
    ("nbf false is refused", "nbf", "false", "nbf-invalid"),
    ("exp null is refused", "exp", "null", "exp-invalid"),
]


@pytest.mark.parametrize(
    ("case", "claim", "literal", "reason"), BAD_TIME_CLAIMS, ids=[c[0] for c in BAD_TIME_CLAIMS]
)
def test_a_time_claim_that_is_not_a_finite_number_is_refused(
    matrix_app: MatrixApp,
    case: str,
    claim: str,
    literal: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A correctly signed token whose exp, iat or nbf is NaN, infinite, too large, or not a number
    at all is a 401 with its own counted reason. The payload is written and signed by hand: the
    literal NaN is exactly what the token carries."""
    key = matrix_app.keys["ec-p384-es384"]
    payload = payload_text(claims(ISS, BASE + DISCOVERY, time.time()), **{claim: literal})
    assert f'"{claim}":{literal}' in payload
    assert_refused_and_counted(
        matrix_app.client, f"Bearer {sign_text(key, payload)}", reason, caplog
    )


def test_a_hand_signed_token_with_finite_times_verifies(matrix_app: MatrixApp) -> None:
    """The control for the table above: the same hand-made signing with ordinary numbers is
    accepted, so the refusals are about the values."""
    key = matrix_app.keys["ec-p384-es384"]
    now = int(time.time())
    payload = payload_text(claims(ISS, BASE + DISCOVERY, now), nbf=str(now - 5))
    response = matrix_app.client.get(DISCOVERY, headers=bearer(sign_text(key, payload)))
    assert response.status_code == 200


# --- the verifier alone: the real Sandbox token, key rotation, replicas ----------


class FrozenClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sandbox_verifier(tmp_path: Path, clock: FrozenClock) -> Verifier:
    issuers = parse_trusted_issuers(
        [
            {
                "iss": "https://sandbox.cds-hooks.org",
                "jwks_file": "sandbox-jwks.json",
                "allowed_jku": ["https://sandbox.cds-hooks.org/.well-known/jwks.json"],
            }
        ],
        base_dir=SANDBOX,
    )
    engine = create_engine(sqlite_url(tmp_path))
    create_schema(engine)
    return Verifier(issuers, DatabaseJtiStore(engine, clock), "http://127.0.0.1:18082", clock)


SANDBOX_HEADER = (SANDBOX / "authorization-header.captured.txt").read_text().strip()
SANDBOX_IAT = 1795254936


def test_the_real_sandbox_token_verifies(tmp_path: Path) -> None:
    """The CDS Hooks Sandbox's captured ES384 token verifies against its published JWKS."""
    verifier = sandbox_verifier(tmp_path, FrozenClock(SANDBOX_IAT + 10))
    verified = verifier.verify(SANDBOX_HEADER, "/cds-services/probe")
    assert verified["iss"] == "https://sandbox.cds-hooks.org"
    assert verified["aud"] == "http://127.0.0.1:18082/cds-services/probe"


SANDBOX_REFUSALS = [
    ("once expired beyond the leeway", SANDBOX_IAT + 300 + 61, "/cds-services/probe", "expired"),
    ("on another endpoint", SANDBOX_IAT + 10, "/cds-services", "aud"),
    (
        "on the feedback endpoint of the same service",
        SANDBOX_IAT + 10,
        "/cds-services/probe/feedback",
        "aud",
    ),
]


@pytest.mark.parametrize(
    ("case", "now", "path", "reason"), SANDBOX_REFUSALS, ids=[c[0] for c in SANDBOX_REFUSALS]
)
def test_the_real_sandbox_token_is_refused(
    tmp_path: Path, case: str, now: float, path: str, reason: str
) -> None:
    """The same real token is refused when expired or used on a URL it was not issued for."""
    with pytest.raises(AuthFailure) as failure:
        sandbox_verifier(tmp_path, FrozenClock(now)).verify(SANDBOX_HEADER, path)
    assert failure.value.reason == reason


def test_the_real_sandbox_token_cannot_be_replayed(tmp_path: Path) -> None:
    """The second presentation of the same Sandbox token (same jti) is refused."""
    verifier = sandbox_verifier(tmp_path, FrozenClock(SANDBOX_IAT + 10))
    verifier.verify(SANDBOX_HEADER, "/cds-services/probe")
    with pytest.raises(AuthFailure, match="replay"):
        verifier.verify(SANDBOX_HEADER, "/cds-services/probe")


def url_verifier(tmp_path: Path, url: str, clock: FrozenClock) -> Verifier:
    issuers = parse_trusted_issuers(
        [{"iss": ISS, "jwks_url": url}], http_allowed_hosts=("127.0.0.1",)
    )
    engine = create_engine(sqlite_url(tmp_path))
    create_schema(engine)
    return Verifier(issuers, DatabaseJtiStore(engine, clock), BASE, clock)


def test_a_rotated_key_is_fetched_once_and_unknown_kids_do_not_hammer_the_jwks(
    tmp_path: Path, jwks_server: JwksServer
) -> None:
    """A new kid triggers one JWKS refetch; another unknown kid within a minute does not."""
    old, new = ec_key("2026-01"), rsa_key("2026-02")
    jwks_server.documents["/jwks.json"] = jwks(old)
    clock = FrozenClock(1_900_000_000)
    verifier = url_verifier(tmp_path, jwks_server.url("/jwks.json"), clock)

    def token(key: SigningKey) -> str:
        return f"Bearer {key.sign(claims(ISS, BASE + DISCOVERY, clock.now))}"

    verifier.verify(token(old), DISCOVERY)
    verifier.verify(token(old), DISCOVERY)
    assert jwks_server.hits["/jwks.json"] == 1  # cached

    jwks_server.documents["/jwks.json"] = jwks(old, new)  # the EHR rotates, later on
    clock.now += 120
    verifier.verify(token(new), DISCOVERY)
    assert jwks_server.hits["/jwks.json"] == 2

    clock.now += 20
    with pytest.raises(AuthFailure, match="unknown-kid"):
        verifier.verify(token(ec_key("never-published")), DISCOVERY)
    assert jwks_server.hits["/jwks.json"] == 2  # within a minute of the last fetch: no refetch

    clock.now += 60
    with pytest.raises(AuthFailure, match="unknown-kid"):
        verifier.verify(token(ec_key("never-published")), DISCOVERY)
    assert jwks_server.hits["/jwks.json"] == 3  # a minute later, one more look


def test_an_unreachable_jwks_refuses_the_token(tmp_path: Path, jwks_server: JwksServer) -> None:
    """No keys, no entry: a JWKS URL answering 404 gives 401, not an all-clear."""
    verifier = url_verifier(tmp_path, jwks_server.url("/missing.json"), FrozenClock(1_900_000_000))
    with pytest.raises(AuthFailure, match="jwks-unavailable"):
        verifier.verify(
            f"Bearer {ec_key('k').sign(claims(ISS, BASE + DISCOVERY, 1_900_000_000))}", DISCOVERY
        )


def test_an_allow_listed_jku_is_where_keys_come_from(
    tmp_path: Path, jwks_server: JwksServer
) -> None:
    """With only allowed_jku configured, the key is fetched from the jku the token names."""
    key = ec_key("jku-key")
    jwks_server.documents["/ehr/jwks.json"] = jwks(key)
    jku = jwks_server.url("/ehr/jwks.json")
    issuers = parse_trusted_issuers(
        [{"iss": ISS, "allowed_jku": [jku]}], http_allowed_hosts=("127.0.0.1",)
    )
    engine = create_engine(sqlite_url(tmp_path))
    create_schema(engine)
    clock = FrozenClock(1_900_000_000)
    verifier = Verifier(issuers, DatabaseJtiStore(engine, clock), BASE, clock)
    assert verifier.verify(f"Bearer {key.sign(claims(ISS, BASE + CALL, clock.now), jku=jku)}", CALL)
    with pytest.raises(AuthFailure, match="no-key-source"):
        verifier.verify(f"Bearer {key.sign(claims(ISS, BASE + CALL, clock.now))}", CALL)
    assert jwks_server.hits == {"/ehr/jwks.json": 1}


# --- key fetching with a deadline: a slow key server costs a call its budget, never a worker ----

SLOW_SERVERS = [
    ("a key server trickling its body a byte every half second", "body"),
    ("a key server trickling its headers a byte every half second", "headers"),
]
MARGIN = 5.0
"""Generous: these tests show a bound of seconds where there was none, not a speed."""


@pytest.mark.parametrize(("case", "mode"), SLOW_SERVERS, ids=[c[0] for c in SLOW_SERVERS])
@pytest.mark.slow
def test_a_slow_key_server_costs_a_call_no_more_than_the_deadline(
    tmp_path: Path, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture, case: str, mode: str
) -> None:
    """A token with a made-up kid (no valid signature needed) makes the service fetch the
    issuer's keys: the call is a counted 401 jwks-unavailable within the deadline, the service
    hangs up on the key server by then, and the next such call does not fetch again."""
    jwks_server.documents["/slow.json"] = jwks(ec_key("published"))
    jwks_server.slow["/slow.json"] = mode
    deadline = 1.0
    app = create_app(
        public_base_url=BASE,
        database_url=sqlite_url(tmp_path),
        auth_disabled=False,
        http_allowed_hosts=("127.0.0.1",),
        jwks_deadline_seconds=deadline,
        trusted_issuers_json=json.dumps([{"iss": ISS, "jwks_url": jwks_server.url("/slow.json")}]),
    )
    client = app.test_client()
    try:
        made_up = f"Bearer {ec_key('made-up').sign(claims(ISS, BASE + DISCOVERY, time.time()))}"
        started = time.monotonic()
        assert_refused_and_counted(client, made_up, "jwks-unavailable", caplog)
        assert time.monotonic() - started < deadline + MARGIN
        hung_up = jwks_server.wait_for_hangup(timeout=deadline + MARGIN)
        assert hung_up is not None and hung_up - started < deadline + MARGIN
        assert_refused_and_counted(client, made_up, "jwks-unavailable", caplog)
        assert jwks_server.hits == {"/slow.json": 1}
    finally:
        app.extensions["cds_audit"].flush()  # the writer thread is done with the db
        app.extensions["cds_db"].dispose()


def deadline_verifier(
    tmp_path: Path, issuers: list[dict[str, Any]], clock: FrozenClock, deadline: float
) -> Verifier:
    engine = create_engine(sqlite_url(tmp_path))
    create_schema(engine)
    return Verifier(
        parse_trusted_issuers(issuers, http_allowed_hosts=("127.0.0.1",)),
        DatabaseJtiStore(engine, clock),
        BASE,
        clock,
        jwks_deadline=deadline,
    )


def outcome(verifier: Verifier, authorization: str) -> str:
    try:
        verifier.verify(authorization, DISCOVERY)
    except AuthFailure as failure:
        return failure.reason
    return "verified"


CONCURRENT = [
    (
        "eight calls with made-up kids while the key server trickles are refused by the deadline",
        "body",
        False,
        1.0,
        "jwks-unavailable",
    ),
    (
        "eight calls signed with the issuer's key while the key server is slow all verify",
        "delay",
        True,
        3.0,
        "verified",
    ),
]


@pytest.mark.parametrize(
    ("case", "mode", "genuine", "deadline", "expected"), CONCURRENT, ids=[c[0] for c in CONCURRENT]
)
@pytest.mark.slow
def test_concurrent_calls_needing_the_same_keys_share_one_fetch(
    tmp_path: Path,
    jwks_server: JwksServer,
    case: str,
    mode: str,
    genuine: bool,
    deadline: float,
    expected: str,
) -> None:
    """Calls that arrive while the keys are being fetched wait for that one fetch (each up to its
    own budget) instead of starting their own: the key server is asked once."""
    key = ec_key("current")
    jwks_server.documents["/jwks.json"] = jwks(key)
    jwks_server.slow["/jwks.json"] = mode
    clock = FrozenClock(time.time())
    issuers = [{"iss": ISS, "jwks_url": jwks_server.url("/jwks.json")}]
    verifier = deadline_verifier(tmp_path, issuers, clock, deadline)
    signer = key if genuine else ec_key("made-up")
    tokens = [f"Bearer {signer.sign(claims(ISS, BASE + DISCOVERY, clock.now))}" for _ in range(8)]
    start = threading.Barrier(len(tokens))

    def timed(token: str) -> tuple[str, float]:
        start.wait()
        began = time.monotonic()
        return outcome(verifier, token), time.monotonic() - began

    with ThreadPoolExecutor(len(tokens)) as pool:
        results = list(pool.map(timed, tokens))
    assert [reason for reason, _ in results] == [expected] * len(tokens)
    assert max(took for _, took in results) < deadline + MARGIN
    assert jwks_server.hits == {"/jwks.json": 1}


KEPT_WORKING = [
    ("another issuer's key server trickles", "https://slow-ehr.example.org", "/slow.json"),
    ("the same issuer's key server trickles a refetch for a made-up kid", ISS, "/jwks.json"),
]


@pytest.mark.parametrize(
    ("case", "slow_iss", "slow_path"), KEPT_WORKING, ids=[c[0] for c in KEPT_WORKING]
)
@pytest.mark.slow
def test_cached_keys_keep_working_while_a_key_server_trickles(
    tmp_path: Path, jwks_server: JwksServer, case: str, slow_iss: str, slow_path: str
) -> None:
    """While a fetch is stuck on a trickling key server, tokens signed with keys already cached
    verify at once: they do not wait for it (the stuck call is still waiting when they are
    done)."""
    key = ec_key("cached")
    jwks_server.documents["/jwks.json"] = jwks(key)
    jwks_server.documents["/slow.json"] = jwks(ec_key("slow-issuer-key"))
    issuers = [{"iss": ISS, "jwks_url": jwks_server.url("/jwks.json")}]
    if slow_iss != ISS:
        issuers.append({"iss": slow_iss, "jwks_url": jwks_server.url(slow_path)})
    clock = FrozenClock(time.time())
    verifier = deadline_verifier(tmp_path, issuers, clock, deadline=3.0)

    def token(signer: SigningKey, iss: str = ISS) -> str:
        return f"Bearer {signer.sign(claims(iss, BASE + DISCOVERY, clock.now))}"

    assert outcome(verifier, token(key)) == "verified"  # the keys are now cached
    jwks_server.slow[slow_path] = "body"
    clock.now += 120  # a refetch for an unknown kid is due again
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(outcome, verifier, token(ec_key("made-up"), slow_iss))
        while jwks_server.hits.get(slow_path, 0) < (2 if slow_iss == ISS else 1):
            assert not stuck.done(), stuck.result()
            time.sleep(0.02)
        assert [outcome(verifier, token(key)) for _ in range(5)] == ["verified"] * 5
        assert not stuck.done()
        assert stuck.result() == "jwks-unavailable"


@pytest.mark.slow
def test_made_up_kids_cannot_make_the_service_hammer_or_wait_on_the_key_server(
    tmp_path: Path, jwks_server: JwksServer
) -> None:
    """After a failed fetch the next is 10 s away, after a good one 60 s: a flood of made-up kids
    in between is refused from what is known, without asking (or waiting for) the key server."""
    key = ec_key("current")
    jwks_server.documents["/jwks.json"] = jwks(key)
    jwks_server.slow["/jwks.json"] = "body"
    clock = FrozenClock(time.time())
    issuers = [{"iss": ISS, "jwks_url": jwks_server.url("/jwks.json")}]
    verifier = deadline_verifier(tmp_path, issuers, clock, deadline=1.0)

    def flood(n: int) -> set[str]:
        """n calls, each with a kid never published."""
        payload = claims(ISS, BASE + DISCOVERY, clock.now)
        return {
            outcome(verifier, f"Bearer {ec_key(f'made-up-{i}').sign(payload)}") for i in range(n)
        }

    assert flood(20) == {"jwks-unavailable"}
    assert jwks_server.hits == {"/jwks.json": 1}
    clock.now += 5
    assert flood(20) == {"jwks-unavailable"}
    assert jwks_server.hits == {"/jwks.json": 1}  # a failed fetch: the next one 10 s later

    del jwks_server.slow["/jwks.json"]  # the key server recovers
    clock.now += 5
    assert (
        outcome(verifier, f"Bearer {key.sign(claims(ISS, BASE + DISCOVERY, clock.now))}")
        == "verified"
    )
    assert jwks_server.hits == {"/jwks.json": 2}
    clock.now += 50
    assert flood(20) == {"unknown-kid"}
    assert jwks_server.hits == {"/jwks.json": 2}  # a good fetch: the next one 60 s later


def test_two_replicas_sharing_a_database_refuse_each_others_replays(tmp_path: Path) -> None:
    """A token accepted by one replica is refused by another that shares the replay store."""
    key = ec_key("k1")
    issuers = parse_trusted_issuers([{"iss": ISS, "jwks": jwks(key)}])
    clock = FrozenClock(1_900_000_000)
    replicas = []
    for _ in range(2):
        engine = create_engine(sqlite_url(tmp_path))  # one engine per replica, one database
        create_schema(engine)
        replicas.append(Verifier(issuers, DatabaseJtiStore(engine, clock), BASE, clock))
    token = f"Bearer {key.sign(claims(ISS, BASE + DISCOVERY, clock.now))}"
    replicas[0].verify(token, DISCOVERY)
    with pytest.raises(AuthFailure, match="replay"):
        replicas[1].verify(token, DISCOVERY)


def test_expired_jti_rows_are_purged(tmp_path: Path) -> None:
    """The replay store forgets a jti once its token can no longer be accepted anyway."""
    engine = create_engine(sqlite_url(tmp_path))
    create_schema(engine)
    clock = FrozenClock(1_900_000_000)
    store = DatabaseJtiStore(engine, clock, purge_every_seconds=300)
    assert store.remember(ISS, "a", clock.now + 360)
    assert not store.remember(ISS, "a", clock.now + 360)
    clock.now += 3600
    assert store.remember(ISS, "b", clock.now + 360)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(seen_jti)).scalar_one() == 1


# --- configuration -------------------------------------------------------------------------------

BAD_CONFIGS = [
    ("a configuration that is not a list", {"iss": ISS}, "expected a JSON list"),
    ("an issuer without iss", [{"jwks_url": "https://e.org/j"}], "iss: required"),
    ("an issuer with no key source", [{"iss": ISS}], "no key source"),
    (
        "an issuer allowing alg none",
        [{"iss": ISS, "jwks_url": "https://e.org/j", "algorithms": ["none"]}],
        "'none' is not allowed",
    ),
    (
        "an issuer allowing HS256",
        [{"iss": ISS, "jwks_url": "https://e.org/j", "algorithms": ["HS256"]}],
        "'HS256' is not allowed",
    ),
    ("a plain-http JWKS URL", [{"iss": ISS, "jwks_url": "http://e.org/j"}], "must be an https URL"),
    ("a plain-http jku", [{"iss": ISS, "allowed_jku": ["http://e.org/j"]}], "must be an https URL"),
    (
        "two key sources",
        [{"iss": ISS, "jwks_url": "https://e.org/j", "jwks_file": "x.json"}],
        "at most one",
    ),
    (
        "a misspelt field",
        [{"iss": ISS, "jwks_url": "https://e.org/j", "tennant": "a"}],
        "unknown field",
    ),
    (
        "the same issuer twice",
        [{"iss": ISS, "jwks_url": "https://e.org/j"}] * 2,
        "configured twice",
    ),
    (
        "a pinned JWKS holding a private key",
        [{"iss": ISS, "jwks": {"keys": [{"kty": "EC", "kid": "k", "d": "secret"}]}}],
        "private",
    ),
    (
        "a pinned JWKS key without kid",
        [{"iss": ISS, "jwks": {"keys": [{"kty": "EC", "crv": "P-384"}]}}],
        "kid",
    ),
    ("a missing JWKS file", [{"iss": ISS, "jwks_file": "/nonexistent/jwks.json"}], "cannot read"),
]


@pytest.mark.parametrize(("case", "doc", "message"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_issuer_configuration_is_refused_with_a_clear_error(
    case: str, doc: Any, message: str
) -> None:
    """Each mistake is named at start-up."""
    with pytest.raises(AuthConfigError, match=message):
        parse_trusted_issuers(doc)


# --- the server command --------------------------------------------------


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({"CDS_DATABASE_URL": sqlite_url(tmp_path), **extra})
    return env


def cds_service(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_serve_refuses_to_start_without_issuers_or_no_auth(tmp_path: Path) -> None:
    """Secure by default: no trusted issuer and no --no-auth is exit 2 with an explanation,
    even when the environment asks for auth to be disabled."""
    result = cds_service("serve", "--port", "1", env=serve_env(tmp_path, CDS_AUTH_DISABLED="true"))
    assert result.returncode == 2
    assert "EHR authentication is not configured" in result.stderr
    assert "--no-auth" in result.stderr


def test_the_environment_cannot_switch_authentication_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CDS_AUTH_DISABLED=true is ignored: an app built from the environment still demands a
    token."""
    monkeypatch.setenv("CDS_AUTH_DISABLED", "true")
    app = create_app(database_url=f"sqlite:///{tmp_path}/t.sqlite3")
    assert app.test_client().get("/cds-services").status_code == 401


@pytest.mark.slow
def test_serve_refuses_a_bad_issuer_configuration(tmp_path: Path) -> None:
    """A broken configuration stops the server at start-up with the field named."""
    result = cds_service(
        "serve",
        "--port",
        "1",
        env=serve_env(tmp_path, CDS_TRUSTED_ISSUERS_JSON=json.dumps([{"iss": ISS}])),
    )
    assert result.returncode == 2
    assert "no key source" in result.stderr


@pytest.mark.slow
def test_serve_with_issuers_starts_and_requires_a_token(tmp_path: Path, keys: Keys) -> None:
    """With trusted issuers configured the real server starts, refuses anonymous calls and
    accepts a signed one."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = serve_env(
        tmp_path,
        CDS_PUBLIC_BASE_URL=base,
        CDS_TRUSTED_ISSUERS_JSON=json.dumps([{"iss": ISS, "jwks": jwks(keys.ec)}]),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_serving(proc, base + DISCOVERY, status=401)  # anonymous: refused
        token = keys.ec.sign(claims(ISS, base + DISCOVERY, time.time()))
        signed = requests.get(base + DISCOVERY, headers=bearer(token), timeout=5)
        assert signed.status_code == 200
        assert signed.json()["services"]
    finally:
        stop(proc)
        if proc.stderr:
            proc.stderr.close()
