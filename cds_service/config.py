"""Settings, from the environment (and, for tests, from keyword arguments).

Every field but `auth_disabled` can be set with the environment variable
CDS_<FIELD NAME IN CAPITALS>; tuples are comma-separated, booleans are 1/true/yes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

NOT_FROM_ENVIRONMENT = frozenset({"auth_disabled"})
"""Secure by default: only `--no-auth` (or a test) turns EHR authentication off, never a stray
environment variable."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with secure and local-friendly defaults."""

    public_base_url: str = "http://127.0.0.1:8080"
    """The URL EHRs call; JWT `aud` must equal this plus the endpoint path."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Bodies over this are refused with 413 before they are parsed."""
    auth_disabled: bool = False
    """True only with `--no-auth` (or in tests): no EHR JWT is required."""
    state_dir: str = ""
    """The one folder for the service's own files (the default SQLite database): an absolute path;
    empty means the per-user state folder, `$XDG_STATE_HOME/cds-service` or
    `~/.local/state/cds-service`. Never the current folder, so every command finds the same
    state wherever it is started."""
    database_url: str = ""
    """SQLAlchemy URL for feedback, the issued-card audit and the JWT replay store; empty means
    `cds_service.sqlite3` in `state_dir`."""
    database_lock_timeout_seconds: float = 5.0
    """How long a SQLite writer waits for another's lock, and a PostgreSQL connection attempt for
    the server (at least 2 s), before the write fails (feedback: 503)."""
    fhir_server_allowlist: tuple[str, ...] = ()
    """URL prefixes a request's fhirServer must start with (https only, see http_allowed_hosts)."""
    http_allowed_hosts: tuple[str, ...] = ()
    """Hosts for which a plain-http fhirServer is accepted (e.g. 127.0.0.1 in tests)."""
    fhir_deadline_seconds: float = 3.0
    """One overall deadline for everything fetched from the FHIR server during a hook call."""
    fhir_connect_timeout_seconds: float = 1.0
    fhir_page_cap: int = 20
    """At most this many `next` pages are followed per prefetch key."""
    terminology_url: str = ""
    """Base URL of a FHIR terminology server (https, or plain http for http_allowed_hosts) asked
    about Condition codes no local value set lists (CodeSystem/$subsumes against each value set's
    `is-a` roots); empty: none, and no code ever leaves the process."""
    terminology_deadline_seconds: float = 1.0
    """One overall deadline for a hook call's terminology-server questions; they also end when
    fhir_deadline_seconds have passed since the hook call started. Late or failed: local answer."""
    terminology_cache_seconds: float = 86400.0
    """How long a terminology-server answer (member or not) is reused, per process."""
    jwks_deadline_seconds: float = 2.0
    """One overall deadline for fetching an issuer's JWKS (connect, TLS, headers, body); a call
    needing keys waits at most this long for them, then gets 401 (reason jwks-unavailable)."""
    trusted_issuers_file: str = ""
    """JSON file describing trusted EHR issuers (see README, EHR authentication)."""
    trusted_issuers_json: str = ""
    """The same JSON inline (environment CDS_TRUSTED_ISSUERS_JSON)."""
    cors_allowed_origins: tuple[str, ...] = ("*",)
    """Origins allowed by CORS; '*' for any (bearer tokens, no cookies)."""
    audit_retention_days: int = 400
    """Issued-card audit rows older than this are deleted (0: kept forever). 400 days: a year
    (alemtuzumab's second course follows the first by 12 months, so the report can compare both
    courses' cards) plus a month for the yearly review."""
    feedback_retention_days: int = 400
    """Feedback older than this (by arrival) is deleted (0: kept forever); the same 400 days, so
    feedback is not kept longer than the card it joins to. Free-text override comments may hold
    what a clinician typed: they must not be kept indefinitely."""
    prune_interval_seconds: float = 3600.0
    """Each process deletes expired rows (audit, feedback, seen JWT ids) at most this often, on a
    background thread started by a request (0: only `cds-service prune`)."""

    def __post_init__(self) -> None:
        # The defaults that depend on where the user's state lives are filled in here, once.
        state_dir = os.path.abspath(os.path.expanduser(self.state_dir or default_state_dir()))
        object.__setattr__(self, "state_dir", state_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", default_database_url(state_dir))

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in NOT_FROM_ENVIRONMENT:
                continue
            raw = os.environ.get(f"CDS_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            kind = hints[f.name]
            if kind is bool:
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif kind is int:
                values[f.name] = int(raw)
            elif kind is float:
                values[f.name] = float(raw)
            elif kind == tuple[str, ...]:
                values[f.name] = tuple(p.strip() for p in raw.split(",") if p.strip())
            else:
                values[f.name] = raw
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        values.update(overrides)
        if "public_base_url" in values:
            values["public_base_url"] = str(values["public_base_url"]).rstrip("/")
        return cls(**values)


def default_state_dir() -> str:
    """The per-user state folder of the XDG base directory specification (a relative
    XDG_STATE_HOME is ignored, as the specification asks)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "cds-service")


def default_database_url(state_dir: str) -> str:
    """The SQLite file in the state folder (an absolute path: four slashes)."""
    return f"sqlite:///{os.path.join(state_dir, 'cds_service.sqlite3')}"
