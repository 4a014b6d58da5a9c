"""Golden responses: every request fixture answered under both order hooks, byte for byte.

A refactoring must leave every answer byte-identical; a change of wording or cards regenerates the
files in a commit of its own (`make golden`), whose diff is the review. Each fixture is sent as
written and also under the other order hook (order-sign: `selections` dropped; order-select: every
draft order selected), on a date fixed here so the files do not change from day to day.
"""

from __future__ import annotations

import copy
import sys
from datetime import date
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout, not an installed copy

from fixture_requests import REQUESTS, fixture_request  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
TODAY = date(2026, 11, 30)
"""The date assumed when an order has neither a start date nor authoredOn."""
HOOKS = ("order-select", "order-sign")


def under_hook(request: dict[str, Any], hook: str) -> dict[str, Any]:
    """The request as the EHR would send it for `hook`."""
    out = copy.deepcopy(request)
    if out.get("hook") == hook:
        return out
    out["hook"] = hook
    context = out.setdefault("context", {})
    if hook == "order-sign":
        context.pop("selections", None)
    else:
        entries = (context.get("draftOrders") or {}).get("entry") or []
        context["selections"] = [
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in entries
            if isinstance(e.get("resource"), dict) and "id" in e["resource"]
        ]
    return out


def cases() -> list[tuple[str, str]]:
    """(fixture name, hook) for every fixture and both hooks."""
    return [(path.stem, hook) for path in sorted(REQUESTS.glob("*.json")) for hook in HOOKS]


def golden_path(name: str, hook: str) -> Path:
    return GOLDEN / f"{name}.{hook}.json"


def render(client: Any, name: str, hook: str) -> bytes:
    """The status and body the service answers, as the bytes stored in the golden file."""
    response = client.post(
        f"/cds-services/lemtrada-{hook}", json=under_hook(fixture_request(name), hook)
    )
    body = response.get_data()
    parsed = orjson.loads(body) if body else None
    return (
        orjson.dumps({"status": response.status_code, "body": parsed}, option=orjson.OPT_INDENT_2)
        + b"\n"
    )


def write_all() -> int:
    from unittest import mock

    from cds_service.app import create_app

    GOLDEN.mkdir(exist_ok=True)
    with mock.patch("cds_service.http_api.today", return_value=TODAY):
        client = create_app(testing=True).test_client()
        for name, hook in cases():
            golden_path(name, hook).write_bytes(render(client, name, hook))
    print(f"wrote {len(cases())} golden responses to {GOLDEN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(write_all())
