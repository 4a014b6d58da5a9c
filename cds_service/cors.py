"""CORS policy: which browser origins may call the API, and the headers that say so.

Pure (no flask): `app.py` asks this module for headers and puts them on every response, error
responses and preflights included. The EHR authenticates with a bearer JWT, never with cookies, so
`Access-Control-Allow-Credentials` is never sent and `*` is a safe default for local use; production
lists the EHR's origins (`CDS_CORS_ALLOWED_ORIGINS=https://ehr.example.org`).
"""

from __future__ import annotations

from dataclasses import dataclass

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"
MAX_AGE_SECONDS = 600
"""How long a browser may cache a preflight answer (Chromium caps this at 2 hours)."""


def _normalise(origin: str) -> str:
    """Origins compare as scheme://host[:port], case-insensitively, without a trailing slash."""
    return origin.strip().rstrip("/").lower()


@dataclass(frozen=True)
class CorsPolicy:
    """The allowed origins; `("*",)` allows any origin."""

    allowed_origins: tuple[str, ...] = ("*",)

    @property
    def any_origin(self) -> bool:
        return "*" in self.allowed_origins

    def allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request from `origin`, or None to refuse."""
        if self.any_origin:
            return "*"
        if not origin:
            return None
        allowed = {_normalise(o) for o in self.allowed_origins}
        return origin if _normalise(origin) in allowed else None

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for every response (a refused origin gets none, so the browser blocks it)."""
        value = self.allow_origin(origin)
        return {} if value is None else {"Access-Control-Allow-Origin": value}

    def preflight_headers(self, origin: str | None) -> dict[str, str]:
        """Extra headers answering an OPTIONS preflight (no authentication is asked for)."""
        if self.allow_origin(origin) is None:
            return {}
        return {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        }
