"""Settings, from the environment (and, for tests, from keyword arguments)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Each field's environment variable is CDS_<FIELD NAME IN CAPS>."""

    public_base_url: str = "http://127.0.0.1:8080"
    """The URL EHRs call (JWT `aud` is checked against it)."""
    max_body_bytes: int = 32 * 1024 * 1024
    auth_disabled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        if os.environ.get("CDS_PUBLIC_BASE_URL"):
            values["public_base_url"] = os.environ["CDS_PUBLIC_BASE_URL"].rstrip("/")
        values["max_body_bytes"] = _env_int("CDS_MAX_BODY_BYTES", cls.max_body_bytes)
        known = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if k in known})
        return replace(cls(), **values)
