"""The integrator's kit end to end: `cds-service dev-issuer` writes a key pair, its JWKS and an
issuers file; a real `cds-service serve` trusting that file accepts the token the kit mints for a
URL, refuses one minted for another URL, and logs the refusal as the README shows (issue #10,
item 6)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import requests
from served import free_port, stop, wait_until_serving

from cds_service.auth import parse_trusted_issuers
from cds_service.dev_issuer import DEFAULT_ISS

# Slow: the console script and a real server trusting the kit;
# `make test` runs it, `make test-fast` leaves it out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "cds-service"
SELECT = "/cds-services/lemtrada-order-select"
SIGN = "/cds-services/lemtrada-order-sign"
FIXTURE = ROOT / "fhir_fixtures" / "requests" / "vzv_status_unknown.json"


def dev_issuer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "dev-issuer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def mint(kit: Path, url: str) -> str:
    """The token `--mint` prints: alone on standard output, nothing else said for a kept kit."""
    minted = dev_issuer(str(kit), "--mint", url)
    assert minted.returncode == 0, minted.stderr
    assert minted.stderr == ""
    assert minted.stdout.count("\n") == 1
    return minted.stdout.strip()


@dataclass
class Served:
    """What happened when a real server trusting the kit was called."""

    kit: Path
    base: str
    statuses: dict[str, int]
    bodies: dict[str, Any]
    log_lines: list[dict[str, Any]]
    raw_log: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """dev-issuer writes the kit; `cds-service serve` is started with CDS_TRUSTED_ISSUERS_FILE
    pointing at it; one call with a token for the URL called, and calls with tokens that are not."""
    tmp = tmp_path_factory.mktemp("dev-issuer")
    kit = tmp / "kit"
    written = dev_issuer(str(kit))
    assert written.returncode == 0, written.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        CDS_PUBLIC_BASE_URL=base,
        CDS_DATABASE_URL=f"sqlite:///{tmp}/state.sqlite3",
        CDS_TRUSTED_ISSUERS_FILE=str(kit / "issuers.json"),
    )
    log_path = tmp / "serve.log"
    body = FIXTURE.read_bytes()
    statuses: dict[str, int] = {}
    bodies: dict[str, Any] = {}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=tmp,
        )
        try:
            wait_until_serving(proc, base + "/healthz", why_exited=log_path.read_text)
            calls = {
                "minted for the URL called": mint(kit, base + SELECT),
                "minted for another URL": mint(kit, base + SIGN),
            }
            for case, token in calls.items():
                response = requests.post(
                    base + SELECT,
                    data=body,
                    timeout=30,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
                statuses[case] = response.status_code
                bodies[case] = response.json()
            replayed = calls["minted for the URL called"]
            statuses["the accepted token again"] = requests.post(
                base + SELECT,
                data=body,
                timeout=30,
                headers={"Authorization": f"Bearer {replayed}", "Content-Type": "application/json"},
            ).status_code
        finally:
            stop(proc)
    raw = log_path.read_text()
    lines = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    yield Served(kit, base, statuses, bodies, lines, raw)


def test_the_kit_holds_a_key_pair_its_jwks_and_an_issuers_file(served: Served) -> None:
    """Private key owner-only; the JWKS holds the public key alone; the issuers file is one the
    service accepts, naming the dev issuer and that JWKS."""
    kit = served.kit
    assert stat.S_IMODE((kit / "private-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(kit.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in (kit / "private-key.pem").read_bytes()
    assert b"PUBLIC KEY" in (kit / "public-key.pem").read_bytes()
    keys = json.loads((kit / "jwks.json").read_text())["keys"]
    assert [(k["kty"], k["crv"], k["alg"], k["use"]) for k in keys] == [
        ("EC", "P-384", "ES384", "sig")
    ]
    assert "d" not in keys[0]
    (issuer,) = parse_trusted_issuers(json.loads((kit / "issuers.json").read_text()), base_dir=kit)
    assert issuer.iss == DEFAULT_ISS
    assert issuer.jwks == {"keys": keys}


def test_the_minted_token_carries_what_the_service_requires(served: Served) -> None:
    """Header alg ES384, typ JWT, the JWKS's kid; claims iss, aud = the URL, exp, iat, jti."""
    url = served.base + SELECT
    token = mint(served.kit, url)
    header = jwt.get_unverified_header(token)
    (key,) = json.loads((served.kit / "jwks.json").read_text())["keys"]
    assert header == {"alg": "ES384", "typ": "JWT", "kid": key["kid"]}
    claims = jwt.decode(token, jwt.PyJWK.from_dict(key).key, algorithms=["ES384"], audience=url)
    assert sorted(claims) == ["aud", "exp", "iat", "iss", "jti"]
    assert claims["iss"] == DEFAULT_ISS
    assert claims["exp"] - claims["iat"] == 300
    assert mint(served.kit, url) != token  # a fresh jti each time


CALLS = [
    ("a token minted for the URL called is accepted", "minted for the URL called", 200),
    ("a token minted for another URL is refused", "minted for another URL", 401),
    ("the accepted token cannot be used twice", "the accepted token again", 401),
]


@pytest.mark.parametrize("case,call,status", CALLS, ids=[c[0] for c in CALLS])
def test_a_real_server_trusting_the_kit(served: Served, case: str, call: str, status: int) -> None:
    """The real server, configured only by CDS_TRUSTED_ISSUERS_FILE, answers each call so."""
    assert served.statuses[call] == status


def test_the_accepted_call_gets_its_cards(served: Served) -> None:
    """The accepted call is answered as without authentication: the fixture's two cards."""
    topics = [
        c["source"]["topic"]["code"] for c in served.bodies["minted for the URL called"]["cards"]
    ]
    assert topics == ["pretreatment-workup", "eligibility-summary"]


def test_the_refusals_are_logged_with_their_reason_and_never_the_token(served: Served) -> None:
    """One line per refusal: aud for the other URL, replay for the spent token; no JWT."""
    refused = [line for line in served.log_lines if line.get("message") == "EHR token refused"]
    assert [(r["reason"], r["iss"], r["path"]) for r in refused] == [
        ("aud", DEFAULT_ISS, SELECT),
        ("replay", DEFAULT_ISS, SELECT),
    ]
    assert "eyJ" not in served.raw_log  # no JWT (every JWT starts with eyJ)


def test_the_readme_log_example_is_the_line_the_server_writes(served: Served) -> None:
    """The README's refused-token line is, byte for byte, the server's line for the token minted
    for another URL, but for the process id and the time."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(
        r"<!-- readme-auth-log -->\n```json\n(.*)\n```\n<!-- /readme-auth-log -->", readme
    )
    assert shown is not None
    example = json.loads(shown.group(1))
    real = next(line for line in served.log_lines if line.get("reason") == "aud")
    assert isinstance(real["process"], int) and isinstance(example["process"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00", real["time"])
    same_but_pid_and_time = {**real, "process": example["process"], "time": example["time"]}
    assert orjson.dumps(same_but_pid_and_time).decode() == shown.group(1)


def test_running_again_keeps_the_kit_and_force_replaces_it(tmp_path: Path) -> None:
    """A second run keeps the key (tokens keep verifying); --force writes a new one."""
    kit = tmp_path / "kit"
    assert dev_issuer(str(kit)).returncode == 0
    first = (kit / "jwks.json").read_text()
    again = dev_issuer(str(kit))
    assert again.returncode == 0 and again.stdout.startswith("kept")
    assert (kit / "jwks.json").read_text() == first
    assert dev_issuer(str(kit), "--force").returncode == 0
    assert (kit / "jwks.json").read_text() != first


MISTAKES = [
    ("a URL without scheme and host", ["--mint", "/cds-services"], "full URL"),
    (
        "a lifetime over an hour",
        ["--mint", "http://127.0.0.1:8080/cds-services", "--lifetime", "3601"],
        "1 to 3600 seconds",
    ),
    (
        "another issuer name for an existing kit",
        ["--iss", "https://other.example"],
        "--force writes a new issuer",
    ),
]


@pytest.mark.parametrize("case,args,says", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistakes_are_one_line_errors(
    tmp_path: Path, case: str, args: list[str], says: str
) -> None:
    """Each mistake is one `error:` line and exit 1; no token is printed."""
    kit = tmp_path / "kit"
    assert dev_issuer(str(kit)).returncode == 0
    result = dev_issuer(str(kit), *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and says in result.stderr
    assert "Traceback" not in result.stderr
